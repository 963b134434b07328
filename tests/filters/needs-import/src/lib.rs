//! A filter importing an interface the gateway does not provide: it must fail to load, and
//! only the routes attaching it may notice.
wit_bindgen::generate!({
    inline: r#"
        package test:needs-import;

        interface telemetry {
            send: func(event: string);
        }

        world needs-import {
            include sluice:filter/filter@0.1.0;
            import telemetry;
        }
    "#,
    path: "../../../sdk/wit/v0.1",
    world: "test:needs-import/needs-import",
    generate_all,
});

struct NeedsImport;

impl Guest for NeedsImport {
    fn validate_config(_: String) -> Result<(), String> {
        Ok(())
    }

    fn on_request(_: &Request) -> Action {
        test::needs_import::telemetry::send("request");
        Action::Continue
    }

    fn on_response(_: &Response) {}
}

export!(NeedsImport);
