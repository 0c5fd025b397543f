//! The standalone hub: `cargo install --path . --features hub`, then `tower-sse-hub --help`.
//! Everything is in [`tower_sse::hub`], so that an app of your own can reuse its parts.

fn main() -> std::process::ExitCode {
    tower_sse::hub::main()
}
