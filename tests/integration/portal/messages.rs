//! Portal API: messages (Medplum-style Communication threads).

use portico::config::EhrProfile;
use portico_sandbox::FailureKind;
use serde_json::{Value, json};

use crate::support::TestApp;

/// Communications with one of `identifier`-free gateway writes: those whose subject is
/// the patient and that were not generated (generated ids are `comm-…`).
fn created_communications(app: &TestApp, patient: &str) -> Vec<Value> {
    app.all_stored("Communication")
        .into_iter()
        .filter(|c| c["subject"]["reference"] == format!("Patient/{patient}"))
        .filter(|c| !c["id"].as_str().unwrap_or("").starts_with("comm-"))
        .collect()
}

/// The members of the patient's active CareTeams.
fn care_team_members(app: &TestApp, patient: &str) -> Vec<String> {
    app.all_stored("CareTeam")
        .into_iter()
        .filter(|t| t["subject"]["reference"] == format!("Patient/{patient}"))
        .flat_map(|t| {
            t["participant"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p["member"]["reference"].as_str().map(str::to_owned))
        })
        .collect()
}

/// A practitioner who is not in the patient's care team.
fn stranger(app: &TestApp, patient: &str) -> String {
    let members = care_team_members(app, patient);
    app.sandbox
        .store()
        .ids("Practitioner")
        .into_iter()
        .map(|id| format!("Practitioner/{id}"))
        .find(|r| !members.contains(r))
        .expect("a practitioner outside the care team")
}

fn new_thread(recipient: &str) -> Value {
    json!({"recipient": recipient, "topic": "Question about my results", "text": "Hello, are my results normal?"})
}

#[tokio::test]
async fn threads_list_and_read_only_the_patients_own() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/messages/threads").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let threads = list.body["threads"].as_array().unwrap();
    assert!(!threads.is_empty());
    for t in threads {
        assert!(t["message_count"].as_u64().unwrap() >= 2, "{t}");
        assert!(t["snippet"].as_str().unwrap().chars().count() <= 140);
        assert_eq!(t["status"], "open");
        assert!(!t["participants"].as_array().unwrap().is_empty());
        // Only pat-1's headers: the stored header's subject is pat-1.
        let id = t["id"].as_str().unwrap();
        let stored = app.stored("Communication", id);
        assert_eq!(stored["subject"]["reference"], "Patient/pat-1");
        assert!(stored.get("partOf").is_none());
    }
    // Newest first.
    let times: Vec<&str> = threads
        .iter()
        .map(|t| t["last_message_at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);
    // The generated clinician messages have no `received`: they are unread.
    assert!(threads.iter().any(|t| t["unread"].as_u64().unwrap() > 0));

    let id = threads[0]["id"].as_str().unwrap();
    let thread = app
        .api_get(&token, &format!("/messages/threads/{id}"))
        .await;
    assert_eq!(thread.status, 200, "{:?}", thread.body);
    let messages = thread.body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len() as u64,
        threads[0]["message_count"].as_u64().unwrap()
    );
    assert_eq!(messages[0]["sender"]["is_me"], true);
    assert_eq!(messages[1]["sender"]["is_me"], false);
    assert!(messages[1]["sender"]["display"].is_string());
    assert_eq!(
        messages[1]["in_response_to"],
        format!("Communication/{}", messages[0]["id"].as_str().unwrap())
    );

    // Another patient's thread: 404 for reading and replying, nothing written.
    let other = app
        .api_get(&app.portal_token("pat-2"), "/messages/threads")
        .await;
    let foreign = other.body["threads"][0]["id"].as_str().unwrap().to_owned();
    let read = app
        .api_get(&token, &format!("/messages/threads/{foreign}"))
        .await;
    assert_eq!(read.status, 404);
    let before = app.sandbox.faults().requests_for("POST", "Communication");
    let reply = app
        .api_post(
            &token,
            &format!("/messages/threads/{foreign}/replies"),
            &json!({"text": "let me in"}),
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Communication"),
        before
    );
    // A message id is not a thread.
    let message_id = messages[0]["id"].as_str().unwrap();
    let not_thread = app
        .api_get(&token, &format!("/messages/threads/{message_id}"))
        .await;
    assert_eq!(not_thread.status, 404);
}

#[tokio::test]
async fn starting_a_thread_with_the_care_team_creates_header_and_message() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let member = care_team_members(&app, "pat-1").remove(0);
    let answer = app
        .api_post(
            &token,
            "/messages/threads",
            &new_thread(&member),
            Some("t-1"),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "open");
    assert_eq!(answer.body["topic"], "Question about my results");
    assert_eq!(answer.body["messages"].as_array().unwrap().len(), 1);
    let thread_id = answer.body["id"].as_str().unwrap().to_owned();

    let created = created_communications(&app, "pat-1");
    assert_eq!(created.len(), 2, "{created:?}");
    let header = created
        .iter()
        .find(|c| c["id"] == thread_id.as_str())
        .unwrap();
    assert!(header.get("partOf").is_none() && header.get("payload").is_none());
    assert_eq!(header["status"], "in-progress");
    assert_eq!(header["topic"]["text"], "Question about my results");
    let recipients: Vec<&str> = header["recipient"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reference"].as_str())
        .collect();
    assert!(recipients.contains(&member.as_str()));
    let message = created
        .iter()
        .find(|c| c["id"] != thread_id.as_str())
        .unwrap();
    assert_eq!(
        message["partOf"][0]["reference"],
        format!("Communication/{thread_id}")
    );
    assert_eq!(message["sender"]["reference"], "Patient/pat-1");
    assert_eq!(message["subject"]["reference"], "Patient/pat-1");
    assert_eq!(message["recipient"][0]["reference"], member.as_str());
    assert_eq!(
        message["payload"][0]["contentString"],
        "Hello, are my results normal?"
    );
    assert!(message.get("inResponseTo").is_none());

    // The new thread is listed first, and the care team itself is a valid recipient.
    let list = app.api_get(&token, "/messages/threads").await;
    assert_eq!(list.body["threads"][0]["id"], thread_id.as_str());
    let team = format!("CareTeam/{}", app.care_team_id("pat-1"));
    let to_team = app
        .api_post(&token, "/messages/threads", &new_thread(&team), None)
        .await;
    assert_eq!(to_team.status, 201, "{:?}", to_team.body);
}

#[tokio::test]
async fn recipients_outside_the_care_team_are_refused_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let before = app.sandbox.faults().requests_for("POST", "Communication");
    for recipient in [
        stranger(&app, "pat-1"),
        format!("CareTeam/{}", app.care_team_id("pat-2")),
        "Patient/pat-2".to_owned(),
    ] {
        let answer = app
            .api_post(&token, "/messages/threads", &new_thread(&recipient), None)
            .await;
        assert_eq!(answer.status, 422, "{recipient}: {:?}", answer.body);
        assert_eq!(answer.code(), "recipient_not_allowed");
    }
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Communication"),
        before
    );
    assert!(created_communications(&app, "pat-1").is_empty());
}

#[tokio::test]
async fn bad_text_and_attachments_are_refused_before_anything_is_written() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let member = care_team_members(&app, "pat-1").remove(0);
    let with = |patch: Value| {
        let mut body = new_thread(&member);
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            with(json!({"text": "x".repeat(4001)})),
            400,
            "text_too_long",
        ),
        (with(json!({"text": "   "})), 400, "text_required"),
        (
            with(json!({"topic": "t".repeat(201)})),
            400,
            "topic_too_long",
        ),
        (
            with(
                json!({"attachments": [{"content_type": "application/x-msdownload", "data": "AQID"}]}),
            ),
            422,
            "attachment_type_not_allowed",
        ),
        (
            with(
                json!({"attachments": [{"content_type": "application/pdf", "data": "%%% not base64"}]}),
            ),
            400,
            "invalid_attachment",
        ),
        (with(json!({"unexpected": 1})), 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let answer = app.api_post(&token, "/messages/threads", &body, None).await;
        assert_eq!(answer.status, status, "{code}: {:?}", answer.body);
        assert_eq!(answer.code(), code);
    }
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Communication"),
        0
    );

    // An attachment within the limits is stored; its data is not sent back.
    let ok = with(
        json!({"attachments": [{"content_type": "application/pdf", "title": "scan.pdf", "data": "JVBERi0xLjQK"}]}),
    );
    let answer = app.api_post(&token, "/messages/threads", &ok, None).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let attachment = &answer.body["messages"][0]["attachments"][0];
    assert_eq!(attachment["content_type"], "application/pdf");
    assert_eq!(attachment["size"], 9);
    assert_eq!(attachment["title"], "scan.pdf");
    assert!(attachment.get("data").is_none());
}

#[tokio::test]
async fn attachments_over_the_profile_limit_are_refused() {
    let app = TestApp::spawn_with_profile_edit(
        "max_attachment_bytes = 1048576",
        "max_attachment_bytes = 8",
    )
    .await;
    let token = app.portal_token("pat-1");
    let member = care_team_members(&app, "pat-1").remove(0);
    let mut body = new_thread(&member);
    // 12 bytes decoded.
    body["attachments"] = json!([{"content_type": "image/png", "data": "AAAAAAAAAAAAAAAA"}]);
    let answer = app.api_post(&token, "/messages/threads", &body, None).await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.code(), "attachment_too_large");
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Communication"),
        0
    );
}

#[tokio::test]
async fn replies_answer_the_latest_message_and_closed_threads_refuse() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/messages/threads").await;
    let id = list.body["threads"][0]["id"].as_str().unwrap().to_owned();
    let thread = app
        .api_get(&token, &format!("/messages/threads/{id}"))
        .await;
    let last = thread.body["messages"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = app
        .api_post(
            &token,
            &format!("/messages/threads/{id}/replies"),
            &json!({"text": "One more question."}),
            Some("r-1"),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(
        reply.body["in_response_to"],
        format!("Communication/{last}")
    );
    assert_eq!(reply.body["sender"]["is_me"], true);
    let stored = app.stored("Communication", reply.body["id"].as_str().unwrap());
    assert_eq!(
        stored["inResponseTo"][0]["reference"],
        format!("Communication/{last}")
    );
    assert_eq!(
        stored["partOf"][0]["reference"],
        format!("Communication/{id}")
    );
    // The thread's participants, never the patient, are the recipients.
    let recipients = stored["recipient"].as_array().unwrap();
    assert!(!recipients.is_empty());
    assert!(recipients.iter().all(|r| r["reference"] != "Patient/pat-1"));
    // A second reply answers the first.
    let second = app
        .api_post(
            &token,
            &format!("/messages/threads/{id}/replies"),
            &json!({"text": "And another."}),
            None,
        )
        .await;
    assert_eq!(second.status, 201);
    assert_eq!(
        second.body["in_response_to"],
        format!("Communication/{}", reply.body["id"].as_str().unwrap())
    );

    // Close the thread in the EHR: replies are refused, nothing is written.
    let mut header = app.stored("Communication", &id);
    header["status"] = json!("completed");
    app.sandbox
        .store()
        .update("Communication", &id, header, None)
        .unwrap();
    let before = app.sandbox.faults().requests_for("POST", "Communication");
    let closed = app
        .api_post(
            &token,
            &format!("/messages/threads/{id}/replies"),
            &json!({"text": "Hello?"}),
            None,
        )
        .await;
    assert_eq!(closed.status, 422, "{:?}", closed.body);
    assert_eq!(closed.code(), "thread_closed");
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Communication"),
        before
    );
}

#[tokio::test]
async fn the_same_key_twice_starts_one_thread() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let member = care_team_members(&app, "pat-1").remove(0);
    let first = app
        .api_post(
            &token,
            "/messages/threads",
            &new_thread(&member),
            Some("same"),
        )
        .await;
    let second = app
        .api_post(
            &token,
            "/messages/threads",
            &new_thread(&member),
            Some("same"),
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(second.status, 201);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(created_communications(&app, "pat-1").len(), 2);
}

#[tokio::test]
async fn a_failed_first_message_is_reported_and_a_retry_completes_the_same_thread() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let member = care_team_members(&app, "pat-1").remove(0);
    // The header's create is `POST /fhir/Communication`; the message's write check reads
    // the header back (`GET /fhir/Communication/<id>`), which fails: the message is not
    // sent.
    app.sandbox
        .faults()
        .inject(FailureKind::Status500, 1.0, Some("/Communication/"));
    let failed = app
        .api_post(
            &token,
            "/messages/threads",
            &new_thread(&member),
            Some("k-partial"),
        )
        .await;
    assert_eq!(failed.status, 502, "{:?}", failed.body);
    assert_eq!(failed.code(), "message_not_sent");
    let thread_id = failed.body["details"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(failed.body["details"]["thread_created"], true);
    assert_eq!(created_communications(&app, "pat-1").len(), 1);

    app.sandbox.faults().clear();
    let retried = app
        .api_post(
            &token,
            "/messages/threads",
            &new_thread(&member),
            Some("k-partial"),
        )
        .await;
    assert_eq!(retried.status, 201, "{:?}", retried.body);
    assert_eq!(retried.body["id"], thread_id.as_str());
    let created = created_communications(&app, "pat-1");
    assert_eq!(created.len(), 2, "one header and one message: {created:?}");
}

#[tokio::test]
async fn cerner_has_no_patient_messaging() {
    let app = TestApp::spawn_for_ehr(EhrProfile::Cerner).await;
    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/messages/threads").await;
    assert_eq!(list.status, 501, "{:?}", list.body);
    assert_eq!(list.code(), "not_supported_by_ehr");
    let start = app
        .api_post(
            &token,
            "/messages/threads",
            &new_thread("Practitioner/x"),
            None,
        )
        .await;
    assert_eq!(start.status, 501);
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Communication"),
        0
    );
}

/// The patient's Communications of a thread that does not exist: neither headers nor
/// messages of a listed thread, so they change no listing, only how large the patient's
/// whole set of Communications is.
fn seed_stray_messages(app: &TestApp, patient: &str, n: usize) {
    for i in 0..n {
        app.sandbox
            .store()
            .create(
                "Communication",
                json!({
                    "resourceType": "Communication",
                    "status": "completed",
                    "partOf": [{"reference": "Communication/no-such-thread"}],
                    "subject": {"reference": format!("Patient/{patient}")},
                    "sender": {"reference": format!("Patient/{patient}")},
                    "sent": "2024-01-01T10:00:00Z",
                    "payload": [{"contentString": format!("stray {i}")}]
                }),
                None,
            )
            .unwrap();
    }
}

#[tokio::test]
async fn threads_from_one_search_equal_the_header_then_messages_listing() {
    // No cache: both listings below ask the EHR.
    let app = TestApp::spawn_configured(|config| config.cache.enabled = false).await;
    let token = app.portal_token("pat-1");
    // A thread to the care team itself too, so that names come from more than one type.
    let team = format!("CareTeam/{}", app.care_team_id("pat-1"));
    let to_team = app
        .api_post(&token, "/messages/threads", &new_thread(&team), None)
        .await;
    assert_eq!(to_team.status, 201, "{:?}", to_team.body);

    app.sandbox.faults().reset_stats();
    let one_search = app.api_get(&token, "/messages/threads").await;
    assert_eq!(one_search.status, 200, "{:?}", one_search.body);
    let faults = app.sandbox.faults();
    // Headers, messages and the participants' names in one search.
    assert_eq!(faults.requests(), 1, "{:?}", faults.stats());
    assert_eq!(faults.requests_for("GET", "Communication"), 1);
    let threads = one_search.body["threads"].as_array().unwrap();
    assert!(threads.len() >= 2, "{}", one_search.body);
    assert!(
        threads
            .iter()
            .any(|t| t["participants"][0] == to_team.body["participants"][1]["display"]),
        "the care team is named: {}",
        one_search.body
    );

    // More Communications than the one search collects: the listing falls back to
    // headers, then their messages, then names read one by one...
    seed_stray_messages(&app, "pat-1", 501);
    faults.reset_stats();
    let fallback = app.api_get(&token, "/messages/threads").await;
    assert_eq!(fallback.status, 200, "{:?}", fallback.body);
    assert!(
        faults.requests_for("GET", "Practitioner") + faults.requests_for("GET", "CareTeam") > 0,
        "names were read: {:?}",
        faults.stats()
    );
    // ...and both ways tell the same threads, counts, snippets and names.
    assert_eq!(fallback.body, one_search.body);
}

fn created_id(created: portico_sandbox::store::Created) -> String {
    match created {
        portico_sandbox::store::Created::New(r) | portico_sandbox::store::Created::Existing(r) => {
            r.id
        }
    }
}

#[tokio::test]
async fn a_participant_the_patient_may_not_read_is_shown_by_reference_only() {
    let app = TestApp::spawn().await;
    let store = app.sandbox.store();
    // Another patient's care team, with a name of its own...
    let secret = "Oncology team of pat-2";
    let team = created_id(
        store
            .create(
                "CareTeam",
                json!({
                    "resourceType": "CareTeam",
                    "status": "active",
                    "name": secret,
                    "subject": {"reference": "Patient/pat-2"}
                }),
                None,
            )
            .unwrap(),
    );
    // ...named as a participant of a thread of pat-1's: the one search `_include`s the
    // team, which the gateway must drop rather than show its name.
    let header = created_id(
        store
            .create(
                "Communication",
                json!({
                    "resourceType": "Communication",
                    "status": "in-progress",
                    "topic": {"text": "Shared question"},
                    "subject": {"reference": "Patient/pat-1"},
                    "recipient": [
                        {"reference": "Patient/pat-1"},
                        {"reference": format!("CareTeam/{team}")}
                    ],
                    "sent": "2025-01-01T10:00:00Z"
                }),
                None,
            )
            .unwrap(),
    );
    let token = app.portal_token("pat-1");
    for path in ["/messages/threads", "/dashboard"] {
        let answer = app.api_get(&token, path).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let threads = match path {
            "/dashboard" => &answer.body["message_threads"],
            _ => &answer.body["threads"],
        };
        let shared = threads
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == header.as_str())
            .unwrap_or_else(|| panic!("the thread is listed: {}", answer.body));
        assert_eq!(
            shared["participants"],
            json!([format!("CareTeam/{team}")]),
            "{path}"
        );
        assert!(
            !answer.body.to_string().contains(secret),
            "{path} shows another patient's care team: {}",
            answer.body
        );
    }
}

/// Against a mock EHR whose search answers carry no `search.mode`: an `_include`d
/// resource then sits among the matches.
mod without_search_mode {
    use portico::config::EhrProfile;
    use wiremock::MockServer;

    use crate::support::{TestApp, fixture, mount_json};

    async fn requests_to(mock: &MockServer, p: &str) -> usize {
        mock.received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().starts_with(p))
            .count()
    }

    #[tokio::test]
    async fn an_included_care_team_is_a_name_never_a_thread() {
        let mock = MockServer::start().await;
        // A thread header h-1 of pat-1's to CareTeam/ct-9 and Practitioner/pr-9, one
        // message m-1, then the included recipients, none with a `search` element. The
        // CareTeam is the patient's, with neither `partOf` nor `payload`: shaped like a
        // header.
        let thread = fixture("ehr/communication-thread-without-search-mode.json");
        mount_json(&mock, "GET", "/fhir/Communication", thread).await;
        let app = TestApp::spawn_on_mock(&mock, EhrProfile::GenericR4).await;
        let token = app.portal_token("pat-1");
        let list = app.api_get(&token, "/messages/threads").await;
        assert_eq!(list.status, 200, "{:?}", list.body);
        let threads = list.body["threads"].as_array().unwrap();
        // One thread: the CareTeam is not one.
        let ids: Vec<&str> = threads.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["h-1"], "{}", list.body);
        let t = &threads[0];
        assert_eq!(t["message_count"], 1);
        assert_eq!(t["unread"], 1);
        // Both names come from the resources the search carried: nothing was read.
        let participants = t["participants"].as_array().unwrap();
        assert_eq!(participants.len(), 2, "{t}");
        assert_eq!(participants[0], "Heart team", "{t}");
        assert!(participants[1].as_str().unwrap().contains("Quinn"), "{t}");
        assert_eq!(requests_to(&mock, "/fhir/CareTeam").await, 0);
        assert_eq!(requests_to(&mock, "/fhir/Practitioner").await, 0);
    }
}
