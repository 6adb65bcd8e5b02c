//! The `tunnel-service` command line: `serve` runs the service, the other
//! subcommands call a running one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gumdrop::Options as _;
use serde_json::{json, Value};

use localproxy::stop::Stop;

use crate::client::call;
use crate::faults::Faults;
use crate::gate::{self, Limits};
use crate::service::{Options, Service, TlsSource};
use crate::side::Side;

/// The general help, printed by `--help`.
pub const HELP: &str = "\
tunnel-service: a local AWS IoT Secure Tunneling service (for tests, demos and
devices without AWS).

USAGE:
  tunnel-service serve [OPTIONS]        run the service (see: tunnel-service serve --help)
  tunnel-service open --api ADDR [--services SSH1,WEB] [--thing-name T]
                      [--lifetime-minutes N] [--description D] [--format kv|env|json]
  tunnel-service close --api ADDR --tunnel-id ID [--delete]
  tunnel-service describe --api ADDR --tunnel-id ID
  tunnel-service list --api ADDR [--thing-name T]
  tunnel-service rotate --api ADDR --tunnel-id ID --client-mode SOURCE|DESTINATION|ALL
                        [--services ..] [--format kv|env|json]

The subcommands other than serve call a running service's API at ADDR
(host:port). REQUEST SIGNATURES ARE NOT CHECKED by the service: anyone who
can reach its API port can open tunnels and read tokens. Exit codes: 0 success, 1 failure (the error is printed), 2 bad
command line.
";

/// The help of `serve`, printed by `serve --help`.
pub const SERVE_HELP: &str = "\
tunnel-service serve: run the local AWS IoT Secure Tunneling service.

USAGE:
  tunnel-service serve [OPTIONS]

On start it prints one line to stdout:
  READY data=IP:PORT api=IP:PORT ca_dir=PATH|- scheme=wss|ws
SIGTERM or SIGINT: every connection is closed with 1001 (going away), the
temporary CA directory is removed, exit 0 (tunnels stay open in --state-file).
Exit codes: 0 stopped by a signal, 1 cannot start, 2 bad command line.

CONTROL PLANE: plain HTTP speaking the IoTSecuredTunneling API (AWS JSON 1.1),
all eight operations of the service model (OpenTunnel, CloseTunnel,
DescribeTunnel, ListTunnels, RotateTunnelAccessToken, TagResource,
UntagResource, ListTagsForResource), checked against its constraints:
  aws iotsecuretunneling --endpoint-url http://127.0.0.1:PORT open-tunnel ...
  REQUEST SIGNATURES ARE NOT CHECKED: anyone who can reach the API port can
  open tunnels and read tokens. It binds to 127.0.0.1 unless told otherwise.
  Test operations (POST /, X-Amz-Target: LocalTest.<Op>, JSON body; side is
  source or destination; 200 {} or an error as for the AWS operations):
    LocalTest.Inject {tunnelId, side, hexBytes | textFrame}  bytes into the
        relayed stream toward a side (unchecked), or one WebSocket text frame
    LocalTest.Drop {tunnelId, side}  drop that side's TCP connection (no close)
    LocalTest.Silence {tunnelId, side}  stop reading from and writing to that
        side's current connection (no data, pings, pongs or close; TCP stays
        open); data for it queues, and its peer stops being read when full
    LocalTest.StopReading {tunnelId, side, pingIntervalMs}  stop reading that
        side's current connection but keep writing to it: data and a ping
        every pingIntervalMs (default 50)
    Silence and StopReading last until a new connection of that side
    replaces it (same client token), it is dropped or the tunnel closes; new
    connections are served normally. Errors: ResourceNotFoundException
    (unknown tunnel), ValidationException (bad member), InvalidRequestException
    (no connection on that side).

DATA PLANE: wss://ADDR/tunnel?local-proxy-mode=source|destination. Without
--cert/--key, a self-signed certificate for localhost and 127.0.0.1 is made
at start and written to the CA directory printed on the READY line (pass it
to `localproxy -c DIR`). Close codes: 1000 tunnel closed or expired; 1008
protocol rule broken, connection replaced by a newer one with the same token,
or token rotated (see the reason); 1003 text frame; 1009 frame too large;
1001 service stopping.

OPTIONS:
  --listen ADDR            data plane address (default 127.0.0.1:0)
  --api-listen ADDR        control plane address (default 127.0.0.1:0)
  --cert FILE --key FILE   PEM certificate (chain) and key for the data plane
  --cert-dir DIR           where the generated CA (and its key) is written (default: a
                           new temp dir); a certificate and key already there are reused
  --state-file PATH        save the tunnels (tokens included: mode 0600) to PATH after
                           every change and load them at start, so a restarted service
                           keeps its tunnels
  --plain-ws               serve ws:// without TLS (debugging only)
  --ready-file PATH        also write the READY line to PATH
  --region R               region in tunnel ARNs (default us-east-1)
  --max-open-tunnels N     OpenTunnel answers LimitExceededException while N tunnels
                           are open (default 1000)
  --max-connections N      open connections per plane (data, API) (default 512)
  --max-connections-per-address N
                           open connections per plane from one client address
                           (default 128)
  --request-timeout SECS   overall deadline of a data-plane handshake (TLS and
                           upgrade) and of an API request (idle keep-alive time
                           included) (default 10)
  At a cap, the connection waiting longest for its handshake or request (of
  that address first) is closed for the new one; with none waiting, the new
  one is refused at once (the API answers 503 ThrottlingException).
  -v, --verbose N          0 off, 1-2 error, 3 warn, 4 info (default), 5 debug, 6 trace
 Test options:
  --lifetime-unit-seconds  read maxLifetimeTimeoutMinutes as seconds (fast expiry tests)
 Fault injection (all off by default):
  --rechunk-seed N         re-chunk the byte stream sent to clients into WebSocket
                           messages of random sizes (xorshift PRNG seeded with N)
  --rechunk-max N          largest re-chunked message (default 64)
  --drop-after-bytes N     drop a connection (TCP close, no close frame) once N bytes
                           went through it (received + sent); by default only the
                           first connection of each tunnel side, so reconnects work
  --drop-side SIDE         only drop source or destination connections
  --drop-repeat            drop every connection after N bytes, reconnects included
  --bandwidth BYTES        limit bytes per second sent to each client
";

#[derive(Debug, gumdrop::Options)]
struct Args {
    #[options(help = "print help")]
    help: bool,
    #[options(command)]
    command: Option<Command>,
}

// Parsed once per process; gumdrop needs the options by value (no Box).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, gumdrop::Options)]
enum Command {
    #[options(help = "run the service")]
    Serve(ServeOpts),
    #[options(help = "open a tunnel")]
    Open(OpenOpts),
    #[options(help = "close a tunnel")]
    Close(CloseOpts),
    #[options(help = "describe a tunnel")]
    Describe(CloseOpts),
    #[options(help = "list tunnels")]
    List(ListOpts),
    #[options(help = "rotate access tokens")]
    Rotate(RotateOpts),
}

#[derive(Debug, gumdrop::Options)]
struct ServeOpts {
    #[options(help = "print help")]
    help: bool,
    #[options(no_short, help = "data plane address", default = "127.0.0.1:0")]
    listen: String,
    #[options(no_short, help = "control plane address", default = "127.0.0.1:0")]
    api_listen: String,
    #[options(no_short, help = "certificate file")]
    cert: Option<String>,
    #[options(no_short, help = "key file")]
    key: Option<String>,
    #[options(no_short, help = "generated CA directory")]
    cert_dir: Option<String>,
    #[options(no_short, help = "serve ws:// (debugging)")]
    plain_ws: bool,
    #[options(no_short, help = "save and load the tunnels here")]
    state_file: Option<String>,
    #[options(no_short, help = "open tunnels allowed at once")]
    max_open_tunnels: Option<usize>,
    #[options(no_short, help = "connections per plane")]
    max_connections: Option<usize>,
    #[options(no_short, help = "connections per plane and client address")]
    max_connections_per_address: Option<usize>,
    #[options(no_short, help = "handshake / request deadline, seconds")]
    request_timeout: Option<f64>,
    #[options(no_short, help = "write the READY line here too")]
    ready_file: Option<String>,
    #[options(no_short, help = "region in ARNs")]
    region: Option<String>,
    #[options(no_short, help = "test: lifetime minutes are seconds")]
    lifetime_unit_seconds: bool,
    #[options(no_short, help = "fault: re-chunk seed")]
    rechunk_seed: Option<u64>,
    #[options(no_short, help = "fault: largest re-chunked message")]
    rechunk_max: Option<usize>,
    #[options(no_short, help = "fault: drop after N bytes")]
    drop_after_bytes: Option<u64>,
    #[options(no_short, help = "fault: side to drop")]
    drop_side: Option<String>,
    #[options(no_short, help = "fault: drop every connection")]
    drop_repeat: bool,
    #[options(no_short, help = "fault: bytes per second")]
    bandwidth: Option<u64>,
    #[options(short = "v", help = "verbosity 0-6")]
    verbose: Option<u8>,
}

#[derive(Debug, gumdrop::Options)]
struct OpenOpts {
    #[options(help = "print help")]
    help: bool,
    #[options(no_short, help = "API address host:port")]
    api: String,
    #[options(no_short, help = "comma-separated service ids")]
    services: Option<String>,
    #[options(no_short, help = "thing name")]
    thing_name: Option<String>,
    #[options(no_short, help = "maxLifetimeTimeoutMinutes")]
    lifetime_minutes: Option<u64>,
    #[options(no_short, help = "description")]
    description: Option<String>,
    #[options(no_short, help = "kv, env or json", default = "kv")]
    format: String,
}

#[derive(Debug, gumdrop::Options)]
struct CloseOpts {
    #[options(help = "print help")]
    help: bool,
    #[options(no_short, help = "API address host:port")]
    api: String,
    #[options(no_short, help = "tunnel id")]
    tunnel_id: String,
    #[options(no_short, help = "also delete (close only)")]
    delete: bool,
}

#[derive(Debug, gumdrop::Options)]
struct ListOpts {
    #[options(help = "print help")]
    help: bool,
    #[options(no_short, help = "API address host:port")]
    api: String,
    #[options(no_short, help = "thing name filter")]
    thing_name: Option<String>,
}

#[derive(Debug, gumdrop::Options)]
struct RotateOpts {
    #[options(help = "print help")]
    help: bool,
    #[options(no_short, help = "API address host:port")]
    api: String,
    #[options(no_short, help = "tunnel id")]
    tunnel_id: String,
    #[options(no_short, help = "SOURCE, DESTINATION or ALL", default = "ALL")]
    client_mode: String,
    #[options(no_short, help = "new service ids")]
    services: Option<String>,
    #[options(no_short, help = "kv, env or json", default = "kv")]
    format: String,
}

/// Runs the command line; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let parsed = match Args::parse_args_default(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tunnel-service: {e}\n\n{HELP}");
            return 2;
        }
    };
    let help_asked = parsed.help
        || parsed.command.as_ref().is_some_and(|c| match c {
            Command::Serve(o) => o.help,
            Command::Open(o) => o.help,
            Command::Close(o) | Command::Describe(o) => o.help,
            Command::List(o) => o.help,
            Command::Rotate(o) => o.help,
        });
    if help_asked {
        match parsed.command {
            Some(Command::Serve(_)) => print!("{SERVE_HELP}"),
            _ => print!("{HELP}"),
        }
        return 0;
    }
    let result = match parsed.command {
        None => {
            eprint!("{HELP}");
            return 2;
        }
        Some(Command::Serve(o)) => return serve(o),
        Some(Command::Open(o)) => open(o),
        Some(Command::Close(o)) => need(&o.api, &o.tunnel_id).and_then(|_| {
            call(
                &o.api,
                "IoTSecuredTunneling.CloseTunnel",
                &json!({"tunnelId": o.tunnel_id, "delete": o.delete}),
            )
            .map_err(|e| e.to_string())
            .map(|_| format!("closed {}", o.tunnel_id))
        }),
        Some(Command::Describe(o)) => need(&o.api, &o.tunnel_id).and_then(|_| {
            call(
                &o.api,
                "IoTSecuredTunneling.DescribeTunnel",
                &json!({"tunnelId": o.tunnel_id}),
            )
            .map_err(|e| e.to_string())
            .map(|v| pretty(&v))
        }),
        Some(Command::List(o)) => need(&o.api, "-").and_then(|_| {
            let mut body = json!({});
            if let Some(t) = &o.thing_name {
                body["thingName"] = json!(t);
            }
            call(&o.api, "IoTSecuredTunneling.ListTunnels", &body)
                .map_err(|e| e.to_string())
                .map(|v| {
                    v["tunnelSummaries"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|t| {
                                    format!(
                                        "{} {}",
                                        t["tunnelId"].as_str().unwrap_or("?"),
                                        t["status"].as_str().unwrap_or("?")
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("\n")
                        })
                        .unwrap_or_default()
                })
        }),
        Some(Command::Rotate(o)) => rotate(o),
    };
    match result {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            eprintln!("tunnel-service: {e}");
            1
        }
    }
}

fn need(api: &str, id: &str) -> Result<(), String> {
    if api.is_empty() {
        return Err("--api HOST:PORT is required".into());
    }
    if id.is_empty() {
        return Err("--tunnel-id is required".into());
    }
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn services(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Prints tokens as `key=value`, `KEY=value` (for eval) or JSON.
fn format_tokens(v: &Value, format: &str) -> Result<String, String> {
    let fields = [
        ("tunnelId", "TUNNEL_ID"),
        ("tunnelArn", "TUNNEL_ARN"),
        ("sourceAccessToken", "SOURCE_TOKEN"),
        ("destinationAccessToken", "DESTINATION_TOKEN"),
    ];
    let present = fields
        .iter()
        .filter_map(|(k, e)| v[*k].as_str().map(|s| (*k, *e, s)));
    match format {
        "kv" => Ok(present
            .map(|(k, _, s)| format!("{k}={s}"))
            .collect::<Vec<_>>()
            .join("\n")),
        "env" => Ok(present
            .map(|(_, e, s)| format!("{e}={s}"))
            .collect::<Vec<_>>()
            .join("\n")),
        "json" => Ok(v.to_string()),
        f => Err(format!("unknown --format {f:?}: kv, env or json")),
    }
}

fn open(o: OpenOpts) -> Result<String, String> {
    need(&o.api, "-")?;
    let mut body = json!({});
    match (&o.services, &o.thing_name) {
        (Some(list), thing) => {
            body["destinationConfig"] = json!({ "services": services(list) });
            if let Some(t) = thing {
                body["destinationConfig"]["thingName"] = json!(t);
            }
        }
        (None, Some(_)) => {
            return Err("--thing-name needs --services (a destination config names both)".into())
        }
        (None, None) => {}
    }
    if let Some(m) = o.lifetime_minutes {
        body["timeoutConfig"] = json!({ "maxLifetimeTimeoutMinutes": m });
    }
    if let Some(d) = &o.description {
        body["description"] = json!(d);
    }
    let v = call(&o.api, "IoTSecuredTunneling.OpenTunnel", &body).map_err(|e| e.to_string())?;
    format_tokens(&v, &o.format)
}

fn rotate(o: RotateOpts) -> Result<String, String> {
    need(&o.api, &o.tunnel_id)?;
    let mut body = json!({ "tunnelId": o.tunnel_id, "clientMode": o.client_mode });
    if let Some(s) = &o.services {
        body["destinationConfig"] = json!({ "services": services(s) });
    }
    let mut v = call(&o.api, "IoTSecuredTunneling.RotateTunnelAccessToken", &body)
        .map_err(|e| e.to_string())?;
    v["tunnelId"] = json!(o.tunnel_id);
    format_tokens(&v, &o.format)
}

/// An optional count that must be at least 1.
fn positive(v: Option<usize>, what: &str) -> Result<Option<usize>, String> {
    match v {
        Some(0) => Err(format!("{what} 0: give at least 1")),
        v => Ok(v),
    }
}

fn serve(o: ServeOpts) -> i32 {
    localproxy::logging::init(o.verbose.unwrap_or(4));
    let parse_addr = |s: &str, what: &str| -> Result<SocketAddr, String> {
        s.parse().map_err(|e| format!("{what} {s:?}: {e}"))
    };
    let opts = (|| -> Result<Options, String> {
        let tls = match (&o.cert, &o.key, o.plain_ws) {
            (_, _, true) => TlsSource::None,
            (Some(c), Some(k), false) => TlsSource::Files {
                cert: c.into(),
                key: k.into(),
            },
            (None, None, false) => TlsSource::Generated {
                ca_dir: o.cert_dir.as_ref().map(PathBuf::from),
            },
            _ => return Err("--cert and --key go together".into()),
        };
        let deadline = match o.request_timeout {
            None => gate::DEFAULT_DEADLINE,
            Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Duration::from_secs_f64(s),
            Some(s) => {
                return Err(format!(
                    "--request-timeout {s}: give seconds, above 0 and at most 3600"
                ))
            }
        };
        let limits = Limits {
            max_connections: positive(o.max_connections, "--max-connections")?
                .unwrap_or(gate::DEFAULT_MAX_CONNECTIONS),
            max_per_address: positive(
                o.max_connections_per_address,
                "--max-connections-per-address",
            )?
            .unwrap_or(gate::DEFAULT_MAX_PER_ADDRESS),
            deadline,
        };
        let drop_side = match &o.drop_side {
            None => None,
            Some(s) => Some(
                Side::parse(s)
                    .ok_or_else(|| format!("--drop-side {s:?}: source or destination"))?,
            ),
        };
        Ok(Options {
            listen: parse_addr(&o.listen, "--listen")?,
            api_listen: parse_addr(&o.api_listen, "--api-listen")?,
            tls,
            lifetime_unit: if o.lifetime_unit_seconds {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(60)
            },
            region: o.region.clone().unwrap_or_else(|| "us-east-1".into()),
            faults: Faults {
                rechunk_seed: o.rechunk_seed,
                rechunk_max: o.rechunk_max.unwrap_or(64),
                drop_after_bytes: o.drop_after_bytes,
                drop_side,
                drop_repeat: o.drop_repeat,
                bandwidth: o.bandwidth,
            },
            state_file: o.state_file.as_ref().map(PathBuf::from),
            max_open_tunnels: o
                .max_open_tunnels
                .unwrap_or(crate::tunnels::DEFAULT_MAX_OPEN_TUNNELS),
            data_limits: limits,
            api_limits: limits,
        })
    })();
    let opts = match opts {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tunnel-service: {e}");
            return 2;
        }
    };
    if !opts.listen.ip().is_loopback() || !opts.api_listen.ip().is_loopback() {
        log::warn!("listening beyond loopback: the API checks no signatures, anyone who reaches it can open tunnels");
    }
    // Before any thread: the signal mask is inherited.
    let stop = Stop::new();
    if let Err(e) = localproxy::stop::install(stop.clone()) {
        eprintln!("tunnel-service: cannot set up signal handling: {e}");
        return 1;
    }
    let service = match Service::start(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tunnel-service: cannot start: {e}");
            return 1;
        }
    };
    let line = service.ready_line();
    if let Some(p) = &o.ready_file {
        if let Err(e) = std::fs::write(p, format!("{line}\n")) {
            eprintln!("tunnel-service: writing {p}: {e}");
            return 1;
        }
    }
    log::info!(
        "data plane on {}://{}/tunnel, API on http://{} (signatures not checked)",
        if service.tls { "wss" } else { "ws" },
        service.data_addr,
        service.api_addr
    );
    if let Some(d) = &service.ca_dir {
        log::info!(
            "CA certificate written to {} (use localproxy -c {})",
            d.display(),
            d.display()
        );
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    while !stop.wait(Duration::from_secs(3600)) {}
    log::info!("stopping: closing every connection (1001)");
    service.shutdown();
    0
}
