//! The shutdown signal of the examples that shut down gracefully.

/// Completes on Ctrl-C, or SIGTERM on Unix (what `docker stop` and systemd send). A signal that
/// can't be listened for never completes, after a line on stderr.
pub async fn shutdown() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("can't listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => drop(sigterm.recv().await),
            Err(err) => {
                eprintln!("can't listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
