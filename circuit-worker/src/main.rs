//! `circuit-worker` binary: parses the command line and hands over to the library.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = circuit_worker::Cli::parse();
    // Non-UTF-8 variables cannot be configuration; skip them rather than panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    circuit_worker::execute(cli, &env, &mut std::io::stdout().lock())?;
    Ok(())
}
