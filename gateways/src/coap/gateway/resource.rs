//! The device-facing resources: which Uri-Path means what, which methods each allows, and the
//! Uri-Query parameters the gateway reads.

use device_models::ThingId;
use device_models::names::is_valid_name;

use crate::coap::Method;

/// What a request addresses under `/things/<id>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    /// `state`: POST reported values; GET them back as the hub holds them.
    State,
    /// `events/<name>`: POST an event.
    Event(String),
    /// `info`: PUT info values; GET the thing's info as the hub holds it.
    Info,
    /// `desired`: GET the pending desired values.
    Desired,
    /// `commands`: GET (usually with Observe) the pending commands.
    Commands,
    /// `replies`: POST the answer to a command.
    Replies,
}

impl Resource {
    /// Whether the resource accepts `method`.
    pub fn allows(&self, method: Method) -> bool {
        match self {
            Self::State => matches!(method, Method::Post | Method::Get),
            Self::Info => matches!(method, Method::Put | Method::Get),
            Self::Event(_) | Self::Replies => method == Method::Post,
            Self::Desired | Self::Commands => method == Method::Get,
        }
    }
}

/// Content-Format of CoRE Link Format (RFC 6690).
pub(crate) const LINK_FORMAT: u16 = 40;

/// Whether `path` is `/.well-known/core`.
pub(crate) fn is_well_known_core(path: &[String]) -> bool {
    matches!(path, [a, b] if a == ".well-known" && b == "core")
}

/// The body of `GET /.well-known/core` (RFC 6690): with `ep=<thing id>` in the query, the
/// resources that device may use, with their methods in the title; without it, where to look.
pub(crate) fn link_format(query: &[String]) -> String {
    let thing = query
        .iter()
        .find_map(|q| q.strip_prefix("ep="))
        .and_then(|id| ThingId::new(id).ok());
    let Some(thing) = thing else {
        return "</things>;rt=\"brume.things\";title=\"one collection per device:                 GET /.well-known/core?ep=<thing id> lists them\""
            .to_owned();
    };
    let json_cbor = "ct=\"50 60\"";
    [
        (
            "state",
            "brume.state",
            "POST reported values; GET them back",
            "",
        ),
        ("info", "brume.info", "PUT info; GET it back", ""),
        (
            "desired",
            "brume.desired",
            "GET desired values not yet reported",
            "",
        ),
        (
            "commands",
            "brume.commands",
            "GET with Observe: desired values and actions",
            ";obs",
        ),
        (
            "replies",
            "brume.replies",
            "POST the answer to a command",
            "",
        ),
        ("events", "brume.events", "POST events/<name>", ""),
    ]
    .iter()
    .map(|(r, rt, title, obs)| {
        format!("</things/{thing}/{r}>;rt=\"{rt}\";{json_cbor};title=\"{title}\"{obs}")
    })
    .collect::<Vec<_>>()
    .join(",")
}

/// Why a path names no resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteError {
    /// Not under `/things/<id>/`, or not one of its resources.
    NotFound,
}

/// Maps Uri-Path segments to a thing and a resource.
pub(crate) fn route(path: &[String]) -> Result<(ThingId, Resource), RouteError> {
    let [root, id, rest @ ..] = path else {
        return Err(RouteError::NotFound);
    };
    if root != "things" {
        return Err(RouteError::NotFound);
    }
    let thing = ThingId::new(id.as_str()).map_err(|_| RouteError::NotFound)?;
    let resource = match rest {
        [r] if r == "state" => Resource::State,
        [r] if r == "info" => Resource::Info,
        [r] if r == "desired" => Resource::Desired,
        [r] if r == "commands" => Resource::Commands,
        [r] if r == "replies" => Resource::Replies,
        [r, name] if r == "events" && is_valid_name(name) => Resource::Event(name.clone()),
        _ => return Err(RouteError::NotFound),
    };
    Ok((thing, resource))
}

/// The Uri-Path key (as the server engine joins it) of a thing's commands resource.
pub(crate) fn commands_path(thing: &ThingId) -> String {
    format!("things/{thing}/commands")
}

/// The thing whose commands resource `path` (a server engine path key) is.
pub(crate) fn thing_of_commands_path(path: &str) -> Option<ThingId> {
    let id = path.strip_prefix("things/")?.strip_suffix("/commands")?;
    ThingId::new(id).ok()
}

/// The Uri-Query parameters the gateway reads; others are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Query<'a> {
    /// `s=<secret>`: the device's secret.
    pub secret: Option<&'a str>,
    /// `t=<type>`: the thing type the device claims, passed on in its `Hello`.
    pub type_hint: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Reads `k=v` Uri-Query options; the first occurrence of a key wins.
    pub fn parse(options: &'a [String]) -> Self {
        let mut q = Self::default();
        for option in options {
            match option.split_once('=') {
                Some(("s", v)) if q.secret.is_none() => q.secret = Some(v),
                Some(("t", v)) if q.type_hint.is_none() && is_valid_name(v) => {
                    q.type_hint = Some(v)
                }
                _ => {}
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        crate::coap::split_path(p)
    }

    #[test]
    fn well_known_core_lists_a_devices_resources() {
        assert!(is_well_known_core(&segs("/.well-known/core")));
        assert!(!is_well_known_core(&segs("/.well-known")));
        let all = link_format(&["ep=t-1".to_owned()]);
        let links: Vec<&str> = all.split(',').collect();
        assert_eq!(links.len(), 6, "{all}");
        assert!(links[0].starts_with("</things/t-1/state>;rt=\"brume.state\";ct=\"50 60\""));
        assert!(links[3].starts_with("</things/t-1/commands>") && links[3].ends_with(";obs"));
        for bad in [vec![], vec!["ep=a.b".to_owned()]] {
            assert!(link_format(&bad).starts_with("</things>;"), "{bad:?}");
        }
    }

    #[test]
    fn methods_per_resource() {
        assert!(Resource::State.allows(Method::Post) && Resource::State.allows(Method::Get));
        assert!(Resource::Info.allows(Method::Put) && Resource::Info.allows(Method::Get));
        assert!(!Resource::State.allows(Method::Put) && !Resource::Replies.allows(Method::Get));
    }

    #[test]
    fn routes() {
        let table: [(&str, Option<Resource>); 14] = [
            ("/things/t-1/state", Some(Resource::State)),
            ("/things/t-1/info", Some(Resource::Info)),
            ("/things/t-1/desired", Some(Resource::Desired)),
            ("/things/t-1/commands", Some(Resource::Commands)),
            ("/things/t-1/replies", Some(Resource::Replies)),
            (
                "/things/t-1/events/fault",
                Some(Resource::Event("fault".into())),
            ),
            ("/things/t-1/events/Fault", None),
            ("/things/t-1/events", None),
            ("/things/t-1/state/x", None),
            ("/things/t.1/state", None),
            ("/things//state", None),
            ("/thing/t-1/state", None),
            ("/things/t-1", None),
            ("/", None),
        ];
        for (path, want) in table {
            let got = route(&segs(path)).ok().map(|(_, r)| r);
            assert_eq!(got, want, "{path}");
        }
        let (thing, _) = route(&segs("/things/abc/state")).unwrap();
        assert_eq!(thing.as_str(), "abc");
    }

    #[test]
    fn commands_paths_round_trip() {
        let t = ThingId::new("dev-9").unwrap();
        assert_eq!(thing_of_commands_path(&commands_path(&t)), Some(t));
        assert_eq!(thing_of_commands_path("things/a/state"), None);
        assert_eq!(thing_of_commands_path("x/a/commands"), None);
    }

    #[test]
    fn query() {
        let opts: Vec<String> = ["x=1", "s=abc=d", "t=thermostat", "s=later"]
            .map(String::from)
            .to_vec();
        let q = Query::parse(&opts);
        assert_eq!(q.secret, Some("abc=d"));
        assert_eq!(q.type_hint, Some("thermostat"));
        let bad = vec!["t=Not Valid".to_owned(), "s".to_owned()];
        assert_eq!(Query::parse(&bad), Query::default());
    }
}
