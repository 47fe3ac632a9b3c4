//! The `perimeter` binary. Everything lives in the library half of this crate so
//! `main` stays three lines (nextest's layout).

fn main() -> std::process::ExitCode {
    perimeter_cli::main()
}
