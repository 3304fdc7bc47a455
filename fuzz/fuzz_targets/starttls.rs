//! Any bytes as the client's side of a mail dialogue: `inspect::starttls::next_command` must not
//! panic, must only let through whole CRLF-terminated lines of printable ASCII within the line
//! bound, and must answer every proper prefix of such a line with `Incomplete`.
#![no_main]

use bulkhead_gateway::inspect::starttls::{next_command, Protocol, Step, MAX_LINE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for proto in [Protocol::Smtp, Protocol::Imap, Protocol::Pop3] {
        match next_command(proto, data) {
            Step::Command { len } | Step::Upgrade { len } => {
                assert!(len >= 2 && len <= data.len() && len <= MAX_LINE_LEN);
                let line = &data[..len];
                assert!(line.ends_with(b"\r\n"));
                assert!(line[..len - 2].iter().all(|&b| (0x20..0x7f).contains(&b)));
                assert_eq!(next_command(proto, line), next_command(proto, data));
                for n in [0, len / 2, len - 1] {
                    assert_eq!(next_command(proto, &line[..n]), Step::Incomplete);
                }
            }
            Step::Incomplete => assert!(data.len() < MAX_LINE_LEN),
            Step::Other => {}
        }
    }
});
