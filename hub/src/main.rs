//! The standalone hub: `cargo install --path hub`, then `tower-sse-hub --help`.
//! Everything is in the library [`tower_sse_hub`], so that an app of your own can reuse its parts.

fn main() -> std::process::ExitCode {
    tower_sse_hub::main()
}
