//! Secrets never reach error text or the logged URL (no database or Kafka needed).
//!
//! Each test plants a recognisable secret where a user could put one by mistake or by design, then
//! checks that the text squeal would print (an error, or `source.url` as logged at start-up) does
//! not contain it, and still says what the user needs to fix (property name, line, host).

use std::time::Duration;

use squeal::config::Config;
use squeal::metrics::Metrics;
use squeal::publish::Publisher;

const BASE: &str = r#"
[source]
url = "mysql://squeal@127.0.0.1:3306"
password_env = "PW"
server_id = 4242
EXTRA_SOURCE
[kafka]
brokers = "127.0.0.1:9"
topic = "t"
KAFKA_PROPS
[checkpoint]
path = "/tmp/squeal-secrets-test/cp.json"
[[rules]]
table = "a.b"
keys = ["k:{id}"]
"#;

fn env(name: &str) -> Option<String> {
    (name == "PW").then(|| "dbpw".to_owned())
}

fn config(extra_source: &str, kafka_props: &str) -> String {
    BASE.replace("EXTRA_SOURCE", extra_source)
        .replace("KAFKA_PROPS", kafka_props)
}

/// The error `Publisher::new` returns (what `squeal run` logs and prints) for these properties.
fn producer_error(kafka_props: &str) -> String {
    let cfg = Config::parse(&config("", kafka_props), env).expect("config parses");
    match Publisher::new(
        &cfg.kafka,
        "/tmp/squeal-secrets-test/cp.json".into(),
        Duration::from_millis(100),
        Metrics::new(),
    ) {
        Ok(_) => panic!("producer creation should fail for {kafka_props:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn kafka_producer_error_names_the_property_but_not_its_value() {
    // This build has no OpenSSL, so librdkafka rejects the property; with OpenSSL, the typo and the
    // bad enum value below still fail.
    let cases = [
        (
            "[kafka.properties]\n\"ssl.key.password\" = \"hunter2-kafka\"",
            "ssl.key.password",
            "hunter2-kafka",
        ),
        (
            "[kafka.properties]\n\"sasl.pasword\" = \"hunter3-kafka\"",
            "sasl.pasword",
            "hunter3-kafka",
        ),
        // librdkafka quotes an invalid value in its own description.
        (
            "[kafka.properties]\n\"security.protocol\" = \"hunter4-kafka\"",
            "security.protocol",
            "hunter4-kafka",
        ),
    ];
    for (props, name, secret) in cases {
        let err = producer_error(props);
        println!("{err}");
        assert!(!err.contains(secret), "secret leaked: {err}");
        assert!(err.contains(name), "property name missing: {err}");
        assert!(err.contains("cannot create producer"), "{err}");
    }
}

#[test]
fn toml_error_gives_line_and_message_but_not_the_offending_line() {
    let text = config("password = \"hunter2-db\"", "");
    let err = Config::parse(&text, env).unwrap_err().to_string();
    println!("{err}");
    assert!(!err.contains("hunter2-db"), "secret leaked: {err}");
    // `password` is on line 6 of BASE (line 1 is the empty line after `r#"`).
    assert!(err.contains("config line 6, column 1"), "{err}");
    assert!(err.contains("unknown field `password`"), "{err}");

    // A syntax error on a secret-bearing line: position, no snippet.
    let text = config(
        "",
        "[kafka.properties]\n\"sasl.password\" = \"hunter5-kafka",
    );
    let err = Config::parse(&text, env).unwrap_err().to_string();
    println!("{err}");
    assert!(!err.contains("hunter5-kafka"), "secret leaked: {err}");
    assert!(err.contains("config line 11, column 33"), "{err}");

    // A secret written without quotes: serde's type error would quote it.
    let text = config("", "[kafka.properties]\n\"sasl.password\" = 982451653");
    let err = Config::parse(&text, env).unwrap_err().to_string();
    println!("{err}");
    assert!(!err.contains("982451653"), "secret leaked: {err}");
    assert!(err.contains("config line 11, column 19"), "{err}");
    assert!(err.contains("invalid type: integer"), "{err}");
}

#[test]
fn url_password_with_reserved_characters_never_stays_in_the_url() {
    for (url, password) in [
        ("mysql://squeal:hun/ter2@127.0.0.1:3306", "hun/ter2"),
        ("mysql://squeal:hun/ter2@127.0.0.1:3306/db", "hun/ter2"),
        ("mysql://squeal:a/b?c#d@127.0.0.1:3306", "a/b?c#d"),
        ("mysql://squeal:p@ss/w@127.0.0.1:3306", "p@ss/w"),
    ] {
        let text = config("", "")
            .replace("mysql://squeal@127.0.0.1:3306", url)
            .replace("password_env = \"PW\"", "");
        let cfg = Config::parse(&text, env).expect("config parses");
        assert!(
            !cfg.source.url.contains(password),
            "password left in {}",
            cfg.source.url
        );
        assert!(cfg.source.url.starts_with("mysql://squeal@127.0.0.1:3306"));
        assert_eq!(cfg.source.password.as_ref().unwrap().expose(), password);
        assert!(!format!("{cfg:?}").contains(password));
    }
}
