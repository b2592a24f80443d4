//! One line per request in Kong's proxy access-log format (`kong/templates/nginx_kong.lua`,
//! `log_format kong_log_format`):
//!
//! ```text
//! $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" kong_request_id: "$kong_request_id"
//! ```
//!
//! Times are UTC (`+0000`); as nginx does, `"`, `\` and bytes outside printable ASCII are
//! written as `\xHH`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where lines go (stdout, a file, a test's buffer).
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The facts of one request the line shows.
#[derive(Debug, Clone)]
pub struct AccessEntry<'a> {
    pub client_ip: &'a str,
    /// `GET /path?query HTTP/1.1`.
    pub request_line: &'a str,
    pub status: i64,
    pub body_bytes: usize,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: &'a str,
    pub time: SystemTime,
}

/// The access-log line of `e`.
pub fn access_log_line(e: &AccessEntry<'_>) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" kong_request_id: \"{}\"",
        escape(e.client_ip),
        time_local(e.time),
        escape(e.request_line),
        e.status,
        e.body_bytes,
        escape(e.referer.unwrap_or("-")),
        escape(e.user_agent.unwrap_or("-")),
        escape(e.request_id)
    );
    s
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// nginx's `$time_local` in UTC: `10/Oct/2000:13:55:36 +0000`.
fn time_local(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1–12), day of the proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_follow_kongs_format() {
        let e = AccessEntry {
            client_ip: "127.0.0.1",
            request_line: "GET /a?b=\"c\" HTTP/1.1",
            status: 403,
            body_bytes: 7,
            referer: None,
            user_agent: Some("curl/8.5.0"),
            request_id: "0123abcd",
            // 2000-10-10 13:55:36 UTC
            time: UNIX_EPOCH + Duration::from_secs(971_186_136),
        };
        assert_eq!(
            access_log_line(&e),
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 403 7 \"-\" \"curl/8.5.0\" kong_request_id: \"0123abcd\""
        );
    }

    #[test]
    fn dates_convert_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(
            time_local(UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399)),
            "29/Feb/2000:23:59:59 +0000"
        );
    }
}
