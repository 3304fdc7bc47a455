//! `controller.toml`, durations (`7d`, `24h`) and RFC 3339 time stamps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Largest controller.toml accepted.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The controller's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// `[controller]`.
    pub controller: ServerSection,
    /// `[policy]`.
    #[serde(default)]
    pub policy: PolicySection,
    /// `[tls]`.
    pub tls: TlsSection,
    /// `[records]`.
    #[serde(default)]
    pub records: RecordsSection,
}

/// `[controller]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address of the one gRPC port.
    pub listen: std::net::SocketAddr,
    /// Where the embedded database lives.
    pub state_dir: PathBuf,
}

/// `[policy]`: both files are optional and watched.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// The policy file.
    pub file: Option<PathBuf>,
    /// The workload inventory.
    pub inventory: Option<PathBuf>,
}

/// `[tls]`: PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The CA that signs every certificate.
    pub ca: PathBuf,
    /// The controller's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// `[records]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsSection {
    /// How long decision records are kept, e.g. `7d`.
    #[serde(default = "default_retention")]
    pub retention: String,
}

impl Default for RecordsSection {
    fn default() -> Self {
        RecordsSection {
            retention: default_retention(),
        }
    }
}

fn default_retention() -> String {
    "7d".to_string()
}

impl ControllerConfig {
    /// Reads and checks a controller.toml. Relative paths are taken relative to its directory.
    pub fn load(path: &Path) -> anyhow::Result<ControllerConfig> {
        use anyhow::Context;
        let size = std::fs::metadata(path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .len();
        anyhow::ensure!(
            size <= MAX_CONFIG_BYTES,
            "{}: larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        );
        let text = policy_engine::file::read_regular_text(path, MAX_CONFIG_BYTES)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let mut config: ControllerConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        parse_duration(&config.records.retention)
            .map_err(|e| anyhow::anyhow!("{}: [records] retention: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.controller.state_dir);
        rebase(&mut config.tls.ca);
        rebase(&mut config.tls.cert);
        rebase(&mut config.tls.key);
        if let Some(p) = config.policy.file.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.policy.inventory.as_mut() {
            rebase(p);
        }
        Ok(config)
    }

    /// The record retention (checked by [`ControllerConfig::load`]).
    pub fn retention(&self) -> Duration {
        parse_duration(&self.records.retention).unwrap_or(Duration::from_secs(7 * 86_400))
    }
}

/// Parses `90s`, `30m`, `24h`, `7d`, `2w` (one number, one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (s, m, h, d or w)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, m, h, d or w)")),
    };
    let total = number
        .checked_mul(seconds)
        .filter(|&s| s > 0 && s <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("`{text}` is out of range"))?;
    Ok(Duration::from_secs(total))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 (UTC, millisecond precision) of milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    let seconds = ms / 1000;
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), in u64/i64 arithmetic
    // that cannot overflow for any u64 millisecond count divided down to days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        for bad in [
            "",
            "7",
            "d",
            "7y",
            "0h",
            "-1h",
            "99999999999999999999d",
            "1000000w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_767_225_599_000), "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn config_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(
            &path,
            "[controller]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n",
        )
        .unwrap();
        let config = ControllerConfig::load(&path).unwrap();
        assert_eq!(config.controller.state_dir, dir.path().join("state"));
        assert_eq!(config.retention(), Duration::from_secs(7 * 86_400));
        std::fs::write(&path, "[controller]\nlisten = \"x\"\n").unwrap();
        assert!(ControllerConfig::load(&path).is_err());
    }
}
