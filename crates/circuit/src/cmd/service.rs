//! `circuit completions` and `circuit manpages`: what a packager or an
//! operator installs beside the binary, generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Flags of `circuit completions`.
#[derive(clap::Args, Debug)]
pub struct Completions {
    /// Shell to write the script for
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

impl Completions {
    /// Prints the completion script on stdout.
    pub fn run(self) -> Result<()> {
        let mut cmd = crate::Cli::command();
        let name = cmd.get_name().to_string();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut cmd, name, &mut out);
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .context("writing the script")
    }
}

/// Flags of `circuit manpages`.
#[derive(clap::Args, Debug)]
pub struct Manpages {
    /// Directory to write the pages into (made if missing), like /usr/local/share/man/man1
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

impl Manpages {
    /// Writes `circuit.1` and one `circuit-COMMAND.1` per command into the
    /// directory; prints each file written, one a line.
    pub fn run(self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("making {}", self.dir.display()))?;
        // `help` is clap's own subcommand: its page would only repeat this one.
        let mut root = crate::Cli::command().disable_help_subcommand(true);
        root.build();
        let source = format!("circuit {}", env!("CARGO_PKG_VERSION"));
        // `.TH` takes its fields by position: an empty date would shift the
        // source and manual into the wrong places.
        let date = page_date();
        let mut pages = vec![root.clone()];
        pages.extend(root.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        let mut stdout = std::io::stdout().lock();
        for cmd in pages {
            let page = clap_mangen::Man::new(cmd)
                .date(&date)
                .source(&source)
                .manual("Circuit Manual");
            let file = page
                .generate_to(&self.dir)
                .with_context(|| format!("writing a man page into {}", self.dir.display()))?;
            writeln!(stdout, "{}", file.display()).context("writing the list of pages")?;
        }
        Ok(())
    }
}

/// The pages' date, `YYYY-MM-DD`: `SOURCE_DATE_EPOCH` when set (so packaged
/// pages are reproducible), else today (UTC).
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), counting
/// in 400-year eras that start on March 1st (so leap days fall at an era's end).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(59), (1970, 3, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(11_017), (2000, 3, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(20_089), (2025, 1, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
    }
}
