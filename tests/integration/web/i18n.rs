//! The pages in Spanish: chosen by `Accept-Language`, by `?lang=` (then remembered in a
//! cookie), with a switcher on every page; errors from the catalog too.

use super::{Browser, signed_in};
use crate::support::TestApp;

#[tokio::test]
async fn accept_language_chooses_spanish_for_anonymous_visitors() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app).with_header("accept-language", "es-MX,es;q=0.9,en;q=0.5");
    let page = browser.get("/").await;
    assert_eq!(page.attrs("html", "lang"), vec!["es"]);
    assert_eq!(page.h1(), "Inicie sesión en su portal del paciente");
    assert_eq!(page.texts("a.button-start"), vec!["Iniciar sesión"]);
    assert_eq!(
        page.texts("a.skip-link"),
        vec!["Saltar al contenido principal"]
    );
    // The switcher offers English in its own name and language.
    assert_eq!(page.texts(".lang-switch a[lang=en]"), vec!["English"]);
    assert_eq!(
        page.attrs(".lang-switch a[lang=en]", "href"),
        vec!["/?lang=en"]
    );
}

#[tokio::test]
async fn the_switcher_remembers_the_choice_for_every_page_and_error() {
    let (_app, mut browser) = signed_in().await;
    assert_eq!(browser.get("/").await.attrs("html", "lang"), vec!["en"]);
    let page = browser.get("/appointments?lang=es").await;
    assert_eq!(page.h1(), "Sus citas");
    assert_eq!(
        browser.cookie("portico_lang").map(String::as_str),
        Some("es")
    );
    // Remembered: every page in Spanish, the navigation too.
    let home = browser.get("/").await;
    assert_eq!(home.h1(), "Su salud de un vistazo");
    assert!(
        home.texts("nav.main-nav a")
            .contains(&"Historia clínica".to_owned())
    );
    assert_eq!(
        browser.get("/record/lab-results").await.h1(),
        "Resultados de laboratorio"
    );
    let meds = browser.get("/medications").await;
    assert!(
        meds.texts(".refill-reason")
            .join(" ")
            .contains("no quedan renovaciones")
    );
    // Errors and the 404 page too.
    let page = browser.get("/medications/mr-1-2/refill").await;
    let (refused, _) = browser.submit(&page.form("main form")).await;
    assert!(refused.h1().starts_with("Error: "));
    assert!(refused.texts(".error-summary li")[0].starts_with("No puede pedir la renovación"));
    assert_eq!(refused.texts(".error-summary h2"), vec!["Hay un problema"]);
    assert_eq!(
        browser.get("/nothing-here").await.h1(),
        "Página no encontrada"
    );
    // Dates are written the Spanish way.
    let charts = browser.get("/record/vital-signs").await;
    let desc = charts.texts("svg.chart > desc").join(" ");
    assert!(desc.contains("resultados del"), "{desc}");
    // Back to English.
    assert_eq!(
        browser.get("/?lang=en").await.h1(),
        "Your health at a glance"
    );
}
