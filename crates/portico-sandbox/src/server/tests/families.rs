//! The families over HTTP: labels kept by the store, the searches a portal makes,
//! RelatedPerson reads, searches and updates, and proxy tokens.

use super::*;
use crate::auth::SYSTEM_CLIENT;

/// A GET with a bearer token; the status and the JSON body.
async fn get_with(http: &Client, url: &str, token: &str) -> (StatusCode, Value) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, json_of(response).await)
}

fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn security(resource: &Value) -> Value {
    resource["meta"]["security"].clone()
}

#[tokio::test]
async fn labels_survive_loading_updates_and_patches() {
    let sb = start(true).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let token = sb
        .auth()
        .issue_access_token(SYSTEM_CLIENT, "system/*.*", None);
    let f = sb.families().clone();
    let all = [
        &f.child_sensitive,
        &f.teen_sensitive,
        &f.elder_sensitive,
        &f.daughter_sensitive,
    ];
    for (ty, id) in all.into_iter().flatten() {
        let url = format!("{base}/{ty}/{id}");
        let (status, loaded) = get_with(&http, &url, &token).await;
        assert_eq!(status, StatusCode::OK, "{ty}/{id}");
        assert_eq!(loaded["meta"]["versionId"], "1");
        let labels = security(&loaded);
        assert!(
            labels.as_array().is_some_and(|l| !l.is_empty()),
            "{ty}/{id} lost its labels"
        );

        // An update that echoes the labels keeps them (and the store stamps its meta).
        let updated = http
            .put(&url)
            .bearer_auth(&token)
            .header("content-type", FHIR)
            .header("if-match", "W/\"1\"")
            .body(loaded.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), StatusCode::OK, "{ty}/{id}");
        let updated = json_of(updated).await;
        assert_eq!(updated["meta"]["versionId"], "2");
        assert_eq!(security(&updated), labels, "{ty}/{id}");

        // An update without meta keeps them too.
        let mut bare = loaded.clone();
        bare.as_object_mut().unwrap().remove("meta");
        let response = http
            .put(&url)
            .bearer_auth(&token)
            .header("content-type", FHIR)
            .header("if-match", "W/\"2\"")
            .body(bare.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{ty}/{id}");
        let (_, read) = get_with(&http, &url, &token).await;
        assert_eq!(read["meta"]["versionId"], "3");
        assert_eq!(security(&read), labels, "{ty}/{id}");
    }

    // JSON Patch ends in an update of the current body: the labels stay.
    let (ty, id) = &f.child_sensitive[0];
    let url = format!("{base}/{ty}/{id}");
    let response = http
        .patch(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json-patch+json")
        .body(
            json!([{"op": "replace", "path": "/recordedDate", "value": "2025-01-02"}]).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, patched) = get_with(&http, &url, &token).await;
    assert_eq!(patched["recordedDate"], "2025-01-02");
    assert_eq!(patched["meta"]["security"][0]["code"], "PSY");

    // A created resource keeps the labels it was sent with.
    let mut labelled = observation(&f.teen, "2025-06-01");
    labelled["meta"] =
        json!({"security": [{"system": crate::generator::SENSITIVITY_SYSTEM, "code": "STD"}]});
    let created = http
        .post(format!("{base}/Observation"))
        .bearer_auth(&token)
        .header("content-type", FHIR)
        .body(labelled.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = json_of(created).await;
    assert_eq!(created["meta"]["security"][0]["code"], "STD");
    assert_eq!(created["meta"]["versionId"], "1");
    sb.shutdown().await;
}

#[tokio::test]
async fn portal_searches_find_labelled_records_for_a_multi_patient_token() {
    let sb = start(true).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let f = sb.families().clone();
    // The Rivera parent's token names three patients; the sandbox serves each of them
    // (it never filters by label: it is the unguarded EHR).
    let parent = sb
        .auth()
        .issue_proxy_token("demo-app", "patient/*.rs", &f.logins.parent);
    let daughter = sb
        .auth()
        .issue_proxy_token("demo-app", "patient/*.rs", &f.logins.daughter);
    let searches = [
        (&f.teen, &f.teen_sensitive, &parent),
        (&f.child, &f.child_sensitive, &parent),
        (&f.elder, &f.elder_sensitive, &daughter),
        (&f.daughter, &f.daughter_sensitive, &daughter),
    ];
    for (patient, labelled, token) in searches {
        for (ty, id) in labelled {
            let mut queries = vec![format!("{ty}?patient={patient}&_count=200")];
            if ty == "Observation" {
                let (_, read) = get_with(&http, &format!("{base}/{ty}/{id}"), token).await;
                let category = read["category"][0]["coding"][0]["code"].as_str().unwrap();
                queries.push(format!("Observation?patient={patient}&category={category}"));
            }
            for query in queries {
                let (status, bundle) = get_with(&http, &format!("{base}/{query}"), token).await;
                assert_eq!(status, StatusCode::OK, "{query}");
                assert!(entry_ids(&bundle).contains(id), "{query} misses {id}");
                let entry = bundle["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["resource"]["id"] == id.as_str())
                    .unwrap();
                assert!(entry["resource"]["meta"]["security"].is_array());
            }
        }
    }
    // The laboratory search a portal makes finds the teen's and the daughter's tests.
    for (patient, id) in [
        (&f.teen, &f.teen_sensitive[2].1),
        (&f.daughter, &f.daughter_sensitive[0].1),
    ] {
        let (_, bundle) = get_with(
            &http,
            &format!("{base}/Observation?patient={patient}&category=laboratory&_count=200"),
            &parent,
        )
        .await;
        assert!(entry_ids(&bundle).contains(id));
    }
    // A proxy token reads the Patient resources of every patient it names.
    for patient in &f.logins.daughter.patients {
        let (status, read) = get_with(&http, &format!("{base}/Patient/{patient}"), &daughter).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["id"], patient.as_str());
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn related_persons_are_read_searched_and_updated() {
    let sb = start(true).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let system = sb
        .auth()
        .issue_access_token(SYSTEM_CLIENT, "system/*.*", None);
    let f = sb.families().clone();

    let (status, rp) = get_with(
        &http,
        &format!("{base}/RelatedPerson/rp-parent-teen"),
        &system,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rp["patient"]["reference"], "Patient/fam-teen");
    assert_eq!(rp["identifier"][0]["value"], f.logins.parent.id.as_str());

    let search = |query: String| {
        let http = http.clone();
        let system = system.clone();
        let base = base.clone();
        async move {
            let (status, bundle) = get_with(&http, &format!("{base}/{query}"), &system).await;
            assert_eq!(status, StatusCode::OK, "{query}");
            let mut ids = entry_ids(&bundle);
            ids.sort();
            ids
        }
    };
    assert_eq!(
        search(format!("RelatedPerson?patient={}", f.child)).await,
        ["rp-grandparent-child", "rp-parent-child"]
    );
    assert_eq!(
        search(format!("RelatedPerson?patient=Patient/{}", f.elder)).await,
        [
            "rp-daughter-elder",
            "rp-former-caregiver-elder",
            "rp-spouse-elder"
        ]
    );
    // `fam-child` is a prefix of no other id, but `Patient/fam-child` must not match the
    // adult child's RelatedPerson either way.
    assert_eq!(
        search(format!("RelatedPerson?patient={}", f.adult_child)).await,
        ["rp-parent-adult-child"]
    );
    let by_login = |login: &str| {
        format!(
            "RelatedPerson?identifier={}|{login}",
            crate::generator::PERSON_SYSTEM
        )
    };
    assert_eq!(
        search(by_login(&f.logins.parent.id)).await,
        ["rp-parent-adult-child", "rp-parent-child", "rp-parent-teen"]
    );
    assert_eq!(
        search(by_login(&f.logins.daughter.id)).await,
        ["rp-daughter-elder"]
    );
    assert!(search(by_login("proxy-rivera")).await.is_empty());
    assert!(
        search(format!(
            "RelatedPerson?identifier=other|{}",
            f.logins.parent.id
        ))
        .await
        .is_empty()
    );

    // A system token updates a RelatedPerson with If-Match; a stale version is refused.
    let url = format!("{base}/RelatedPerson/rp-former-caregiver-elder");
    let (_, mut former) = get_with(&http, &url, &system).await;
    former["active"] = json!(false);
    let put = |version: &'static str, body: String| {
        http.put(&url)
            .bearer_auth(&system)
            .header("content-type", FHIR)
            .header("if-match", version)
            .body(body)
            .send()
    };
    let response = put("W/\"1\"", former.to_string()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "W/\"2\"");
    let stored = json_of(response).await;
    assert_eq!(stored["active"], false);
    assert_eq!(stored["period"], former["period"]);
    let stale = put("W/\"1\"", former.to_string()).await.unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    sb.shutdown().await;
}

#[tokio::test]
async fn everything_gathers_the_compartment_with_labels_and_related_persons() {
    let sb = start(true).await;
    let base = sb.fhir_base();
    let http = Client::new();
    let f = sb.families().clone();
    let parent = sb
        .auth()
        .issue_proxy_token("demo-app", "patient/*.rs", &f.logins.parent);
    let (status, bundle) = get_with(
        &http,
        &format!("{base}/Patient/{}/$everything", f.teen),
        &parent,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bundle["type"], "searchset");
    let keys: HashSet<(String, String)> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["resource"]["resourceType"].as_str().unwrap().to_owned(),
                e["resource"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(bundle["total"].as_u64().unwrap() as usize, keys.len());
    assert!(keys.contains(&("Patient".to_owned(), f.teen.clone())));
    for labelled in &f.teen_sensitive {
        assert!(keys.contains(labelled), "{labelled:?} missing");
    }
    assert!(keys.contains(&("RelatedPerson".to_owned(), "rp-parent-teen".to_owned())));
    for ty in [
        "Appointment",
        "Invoice",
        "Account",
        "Communication",
        "MedicationRequest",
    ] {
        assert!(keys.iter().any(|(t, _)| t == ty), "no {ty}");
    }
    // Nothing of anyone else: every entry is the teen's (the shared Medication and
    // Practitioners are not in a compartment).
    let teen_ref = format!("Patient/{}", f.teen);
    for entry in bundle["entry"].as_array().unwrap() {
        let r = &entry["resource"];
        if r["resourceType"] == "Patient" {
            assert_eq!(r["id"], f.teen.as_str());
        } else {
            assert!(
                r.to_string().contains(&format!("\"{teen_ref}\"")),
                "{}",
                r["id"]
            );
        }
    }
    // The elder's $everything has all three of his RelatedPersons.
    let (_, bundle) = get_with(
        &http,
        &format!("{base}/Patient/{}/$everything", f.elder),
        &parent,
    )
    .await;
    let rps: HashSet<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "RelatedPerson")
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rps,
        HashSet::from([
            "rp-daughter-elder",
            "rp-spouse-elder",
            "rp-former-caregiver-elder"
        ])
    );
    let (status, _) = get_with(
        &http,
        &format!("{base}/Patient/nobody/$everything"),
        &parent,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_with(&http, &format!("{base}/Observation/x/$everything"), &parent).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sb.shutdown().await;
}
