//! `tunnel-service`: the local AWS IoT Secure Tunneling service.

fn main() {
    println!("tunnel-service: not yet");
}
