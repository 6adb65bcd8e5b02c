//! `tunnel-service`: the local AWS IoT Secure Tunneling service (see `--help`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(localproxy::service::cli::run(&args));
}
