//! `tunnel-service`: the local AWS IoT Secure Tunneling service (see `--help`),
//! a faithful stand-in for AWS on loopback used by `make demo` and the
//! end-to-end tests. A binary crate of its own: it uses the `localproxy`
//! library only through its public API (frame codec, protocol constants,
//! secrets, logging), and the library ships nothing of it.
//!
//! Modules, from the command line down:
//! - [`cli`] and [`client`]: the command line and its API client.
//! - [`service`]: binds both planes, accepts through their [`gate`]
//!   (connection caps, deadlines), shuts down.
//! - [`api`], [`model`] and [`local_test`]: the control plane (AWS JSON 1.1),
//!   the constraints of the service model it checks, and the fault
//!   operations for tests.
//! - [`handshake`], [`relay`] and [`stream`]: the data plane.
//! - [`tunnels`] and [`side`]: tunnel state shared by both planes; [`state`]
//!   saves it.
//! - [`faults`]: fault injection for tests.
//! - [`cert`] and [`files`]: the generated certificate, and the files that
//!   hold secrets.
//! - [`http`]: request heads and responses.

mod api;
mod cert;
mod cli;
mod client;
mod faults;
mod files;
mod gate;
mod handshake;
mod http;
mod local_test;
mod model;
mod relay;
mod service;
mod side;
mod state;
mod stream;
mod tunnels;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::run(&args));
}
