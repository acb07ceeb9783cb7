//! Answers read in part (`execute_partial`): a long search answer handed on as its first
//! part and the rest, a short one whole, and a rest that breaks off.

use super::*;

/// A searchset whose JSON is about `bytes` long.
fn long_bundle(bytes: usize) -> String {
    let entry = r#"{"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p"}}}"#;
    let n = bytes / (entry.len() + 1) + 1;
    format!(
        r#"{{"resourceType":"Bundle","type":"searchset","entry":[{}]}}"#,
        vec![entry; n].join(",")
    )
}

#[tokio::test]
async fn a_long_search_answer_is_handed_on_in_part_and_a_short_one_whole() {
    use crate::partial::{Answer, WHOLE_UP_TO};

    let server = MockServer::start().await;
    let long = long_bundle(3 * WHOLE_UP_TO);
    let short = long_bundle(WHOLE_UP_TO / 4);
    for (p, body) in [("/fhir/Observation", &long), ("/fhir/Condition", &short)] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(body.clone().into_bytes(), "application/fhir+json"),
            )
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/fhir/Observation/o"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(
                format!(
                    r#"{{"resourceType":"Observation","id":"o","note":[{{"text":"{}"}}]}}"#,
                    "x".repeat(3 * WHOLE_UP_TO)
                )
                .into_bytes(),
                "application/fhir+json",
            ),
        )
        .mount(&server)
        .await;
    let c = open_client(&server);

    let answer = c
        .execute_partial(FhirRequest::search(
            "Observation",
            Vec::<(String, String)>::new(),
        ))
        .await
        .unwrap();
    let Answer::Partial(first, mut rest) = answer else {
        panic!("a long answer came whole");
    };
    assert!(first.body.len() >= WHOLE_UP_TO && first.body.len() < long.len());
    assert_eq!(first.status, 200);
    let mut body = first.body.to_vec();
    while let Some(piece) = rest.next().await {
        body.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(body, long.as_bytes());

    let answer = c
        .execute_partial(FhirRequest::search(
            "Condition",
            Vec::<(String, String)>::new(),
        ))
        .await
        .unwrap();
    assert!(matches!(answer, Answer::Whole(r) if r.body.as_ref() == short.as_bytes()));
    // Only searches are read in part; and `execute` reads everything whole.
    let answer = c
        .execute_partial(FhirRequest::read("Observation", "o"))
        .await
        .unwrap();
    assert!(matches!(answer, Answer::Whole(r) if r.body.len() > 3 * WHOLE_UP_TO));
    let whole = c
        .execute(FhirRequest::search(
            "Observation",
            Vec::<(String, String)>::new(),
        ))
        .await
        .unwrap();
    assert_eq!(whole.body.as_ref(), long.as_bytes());
}

#[tokio::test]
async fn a_partial_answer_that_is_not_json_or_breaks_off_says_so() {
    use crate::partial::{Answer, WHOLE_UP_TO};

    // Not JSON by its content type: refused before anything is handed on.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(long_bundle(2 * WHOLE_UP_TO).into_bytes(), "text/html"),
        )
        .mount(&server)
        .await;
    let e = open_client(&server)
        .execute_partial(FhirRequest::search(
            "Observation",
            Vec::<(String, String)>::new(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::MalformedBody { .. }), "{e:?}");

    // A body cut off after its first part: the rest ends with an error.
    let body = long_bundle(2 * WHOLE_UP_TO);
    let head: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            &body[..WHOLE_UP_TO + 1000]
        )
        .into_boxed_str(),
    );
    let base = raw_server(head, true).await;
    let c = client(&base, UpstreamAuthConfig::None);
    let Answer::Partial(_, mut rest) = c
        .execute_partial(FhirRequest::search(
            "Observation",
            Vec::<(String, String)>::new(),
        ))
        .await
        .unwrap()
    else {
        panic!("a long answer came whole");
    };
    let mut failed = false;
    while let Some(piece) = rest.next().await {
        if piece.is_err() {
            failed = true;
        }
    }
    assert!(failed, "a cut body ended as if whole");
}
