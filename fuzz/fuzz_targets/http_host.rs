//! Any bytes as the start of a client stream: the HTTP parser must not panic, a host it reports
//! must be a valid normalised host name, and no strict prefix of a complete head may be complete.
#![no_main]

use bulkhead_gateway::inspect::http::{parse_request_head, HttpParse};
use bulkhead_gateway::inspect::validate_host_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let HttpParse::Complete(info) = parse_request_head(data) else {
        return;
    };
    assert!(info.head_len <= data.len());
    if let Some(host) = info.host {
        let again = validate_host_name(host.as_bytes()).expect("reported hosts are valid");
        assert_eq!(again.as_str(), host.as_str());
    }
    // The head alone gives the same answer; one byte less is never complete.
    assert_eq!(parse_request_head(&data[..info.head_len]), HttpParse::Complete(info));
    if info.head_len > 0 {
        assert!(!matches!(
            parse_request_head(&data[..info.head_len - 1]),
            HttpParse::Complete(_)
        ));
    }
});
