//! `localproxy`: parse the command line, set up logging, run, map errors to exit codes.

fn main() {
    println!("localproxy: not yet");
}
