//! Shared by the benchmarks.

/// A JumpCloud Directory Insights-like event of about 720 bytes.
pub fn event(i: usize) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"id":"65f1c0de9a8b7c6d5e4f{i:04}","event_type":"user_login_attempt","service":"directory","#,
            r#""timestamp":"2025-06-18T01:40:48.953462371Z","success":true,"client_ip":"203.0.113.{o}","#,
            r#""organization":"5f0c1d2e3a4b5c6d7e8f9a0b","username":"jane.doe","mfa":true,"#,
            r#""initiated_by":{{"id":"5f0c1d2e3a4b5c6d7e8f{i:04}","type":"user","username":"jane.doe"}},"#,
            r#""geoip":{{"continent_code":"EU","country_code":"NL","region_code":"NH","region_name":"North Holland","timezone":"Europe/Amsterdam","latitude":52.3676,"longitude":4.9041}},"#,
            r#""useragent":{{"name":"Chrome","major":"125","os":"Mac OS X","os_name":"Mac OS X","os_version":"10.15.7","device":"Mac","version":"125.0.0.0"}},"#,
            r#""auth_context":{{"auth_methods":{{"password":{{"success":true}}}}}},"@version":"1"}}"#
        ),
        i = i % 10000,
        o = i % 250
    )
    .into_bytes()
}

/// The push benchmark's event: [`event`] plus JumpCloud's SSO application
/// fields, about 840 bytes, the size the issues' peer measurements used.
#[allow(dead_code, reason = "only the push benchmark uses it")]
pub fn push_event(i: usize) -> Vec<u8> {
    let mut e = event(i);
    e.pop(); // the closing brace
    e.extend_from_slice(
        concat!(
            r#","application":{"id":"5f0c1d2e3a4b5c6d7e8f1234","name":"salesforce","#,
            r#""display_label":"Salesforce Production","type":"saml"}}"#
        )
        .as_bytes(),
    );
    e
}
