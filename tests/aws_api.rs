//! The control plane driven by a real AWS client: boto3 (installed by
//! scripts/setup-test.sh into a virtualenv) runs tests/aws/check_api.py against a
//! `tunnel-service`, checking every operation, response, error and input
//! constraint against botocore's own iotsecuretunneling service model.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::raw::Svc;
use common::watchdog;

/// The virtualenv scripts/setup-python.sh makes (same default, same override).
fn venv() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("LOCALPROXY_PYTHON_VENV") {
        Some(v) => root.join(v),
        None => root.join("target/python-venv"),
    }
}

#[test]
fn boto3_against_the_service_model() {
    let _w = watchdog("boto3_against_the_service_model", Duration::from_secs(180));
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test.sh (or scripts/setup-python.sh), which installs boto3 \
         into that virtualenv; `make test` and CI run it first",
        python.display()
    );
    let max_open = "8";
    let svc = Svc::start(&["--max-open-tunnels", max_open]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aws/check_api.py");
    let mut cmd = Command::new(&python);
    // Nothing from the machine's AWS or proxy set-up: loopback only, the
    // credentials given in the script.
    for (k, _) in std::env::vars_os() {
        let upper = k.to_string_lossy().to_ascii_uppercase();
        if upper.starts_with("AWS_") || upper.ends_with("_PROXY") {
            cmd.env_remove(&k);
        }
    }
    cmd.arg(&script)
        .arg(format!("http://{}", svc.api))
        .arg(max_open)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = cmd.output().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "check_api.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" passed, 0 failed") && !last.starts_with("0 passed"),
        "no closing count: {last:?}"
    );
}
