//! `circuit`: the daemon (`circuit start`) and the command-line client.

mod args;
mod cmd;
mod dial;
mod lenient;
mod stdin;
mod values;

use std::process::ExitCode;

use clap::Parser;

/// One binary turns a set of hosts into one programmable system.
#[derive(Parser, Debug)]
#[command(name = "circuit", version, about, propagate_version = true)]
struct Cli {
    /// How to reach the cluster, for every command.
    #[command(flatten)]
    dial: dial::DialArgs,
    #[command(subcommand)]
    cmd: cmd::Cmd,
}

/// Parses the command line, noting which dial flags it names itself (a
/// Redis breaker command refuses them; the environment's are ignored).
fn parse(argv: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let m = Cli::command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&m)?;
    // Global flags are propagated to every level of the matches.
    let mut level = Some(&m);
    while let Some(at) = level {
        for (id, flag) in [
            ("dial", "-d/--dial"),
            ("discover", "--discover"),
            ("iface", "--if"),
            ("hmac", "--hmac"),
        ] {
            if at.value_source(id) == Some(ValueSource::CommandLine) && !cli.dial.given.contains(&flag) {
                cli.dial.given.push(flag);
            }
        }
        level = at.subcommand().map(|(_, sub)| sub);
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let argv = args::go_style(std::env::args_os().collect());
    let cli = match parse(argv) {
        Ok(cli) => cli,
        // A malformed value (a path, a capacity) is reported like a refused
        // request: one line, exit status 1. Other usage errors exit with 2.
        Err(e) => match values::refused(&e) {
            Some(bad) => {
                eprintln!("circuit: {bad}");
                return ExitCode::FAILURE;
            }
            None => e.exit(),
        },
    };
    if !cli.cmd.is_server() {
        // A client whose output goes to a closed pipe (`circuit peek … | head`)
        // ends quietly, as other Unix tools do; the server keeps ignoring SIGPIPE.
        // SAFETY: set before any other thread exists; SIG_DFL installs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
        };
    }
    match cli.cmd.run(cli.dial) {
        Ok(()) => ExitCode::SUCCESS,
        // Its message is out already (`breaker exec`).
        Err(e) if e.downcast_ref::<cmd::breaker::ExitWith>().is_some() => {
            let code = e.downcast_ref::<cmd::breaker::ExitWith>().map_or(1, |c| c.0);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("circuit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = std::iter::once("circuit")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect();
        super::parse(args::go_style(argv))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dial_flags_go_anywhere_and_go_style() {
        for args in [
            &["-d", "U", "ls", "/"][..],
            &["ls", "-d", "U", "/"],
            &["ls", "/", "--dial=U"],
            &["ls", "-dial", "U", "/"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.dial.dial.as_deref(), Some("U"), "{args:?}");
        }
        let cli = parse(&["peek", "-hmac", "k", "-discover", "/X0000000000000001"]).unwrap();
        assert_eq!(cli.dial.hmac.unwrap().to_str(), Some("k"));
        assert_eq!(cli.dial.discover.as_deref(), Some(circuit_proto::beacon::DEFAULT_GROUP));
        let cli = parse(&["start", "-a", ":0", "-if", "lo", "-discover", "228.1.1.1:9"]).unwrap();
        assert_eq!(cli.dial.iface.as_deref(), Some("lo"));
        assert_eq!(cli.dial.discover.as_deref(), Some("228.1.1.1:9"));
        assert!(cli.cmd.is_server());
    }

    #[test]
    fn docker_is_a_go_style_start_flag() {
        for flag in ["-docker", "--docker"] {
            let cli = parse(&["start", "-a", ":0", flag]).unwrap();
            assert!(matches!(cli.cmd, cmd::Cmd::Start(ref a) if a.docker), "{flag}");
        }
        let cli = parse(&["start", "-a", ":0"]).unwrap();
        assert!(matches!(cli.cmd, cmd::Cmd::Start(ref a) if !a.docker));
    }

    #[test]
    fn breaker_commands_take_redis_in_the_one_tree() {
        use cmd::breaker::{BreakerCmd, Cmd as B};
        let breaker = |args: &[&str]| match parse(args).unwrap().cmd {
            cmd::Cmd::Client(cmd::ClientCmd::Breaker(b)) => b,
            other => panic!("{other:?}"),
        };
        let B::Breaker(BreakerCmd::Exec(e)) = breaker(&[
            "breaker",
            "exec",
            "--redis=redis://h:1",
            "b",
            "-k",
            "t",
            "--",
            "true",
            "x",
        ]) else {
            panic!()
        };
        assert_eq!(
            (
                e.target.redis.as_deref(),
                e.target.target.as_str(),
                e.key.as_str(),
                e.cmd.len()
            ),
            (Some("redis://h:1"), "b", "t", 2)
        );
        // `--redis` after `--` belongs to CMD.
        let B::Breaker(BreakerCmd::Exec(e)) = breaker(&["breaker", "exec", "/X1/b", "--", "prog", "--redis", "x"])
        else {
            panic!()
        };
        assert_eq!((e.target.redis, e.cmd.len()), (None, 3));
        // Dial flags given on the command line are noted; not otherwise.
        let cli = parse(&[
            "breaker",
            "reset",
            "--redis",
            "redis://h:1",
            "b",
            "-d",
            "U",
            "-hmac",
            "k",
        ])
        .unwrap();
        assert_eq!(cli.dial.given, ["-d/--dial", "--hmac"]);
        assert!(parse(&["mkbreaker", "/X1/b"]).unwrap().dial.given.is_empty());
        // `show` and `scrub` exist only over Redis; their NAME is checked by the parser.
        assert!(parse(&["breaker", "show", "b"]).is_err());
        let e = parse(&["breaker", "scrub", "--redis", "redis://h:1", "a b"]).unwrap_err();
        assert!(values::refused(&e).unwrap().0.starts_with("bad breaker name \"a b\""));
    }

    #[test]
    fn malformed_values_are_refused_in_one_line() {
        let e = parse(&["peek", "relative"]).unwrap_err();
        assert_eq!(
            values::refused(&e).unwrap().0,
            "bad path \"relative\": path \"relative\" must start with /"
        );
        let e = parse(&["mkchan", "/X0000000000000001/a", "-1"]).unwrap_err();
        assert!(values::refused(&e).unwrap().0.starts_with("second argument to mkchan"));
        // Other usage errors stay clap's (exit status 2).
        let e = parse(&["ls"]).unwrap_err();
        assert!(values::refused(&e).is_none());
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["incr", "/X0000000000000001/a", "-2"]).unwrap_err();
        assert!(values::refused(&e).is_none());
    }
}
