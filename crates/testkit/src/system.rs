//! Running the system programs that build test networks (`ip`, `iptables`).

use std::io;
use std::process::Command;

pub(crate) fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs `program` with `args`; fails with what it said if it fails.
pub(crate) fn run(program: &str, args: &[String]) -> io::Result<()> {
    output(program, args).map(drop)
}

/// Runs `program` with `args` and returns what it printed; fails with what it said if it
/// fails.
pub(crate) fn output<S: AsRef<std::ffi::OsStr> + AsRef<str>>(program: &str, args: &[S]) -> io::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| io::Error::new(error.kind(), format!("could not run {program}: {error}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        Err(io::Error::other(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
