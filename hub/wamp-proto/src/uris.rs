//! The WAMP URIs the spec defines: errors, close reasons, the meta API and revocation reasons.

pub const INVALID_URI: &str = "wamp.error.invalid_uri";
pub const NO_SUCH_PROCEDURE: &str = "wamp.error.no_such_procedure";
pub const PROCEDURE_ALREADY_EXISTS: &str = "wamp.error.procedure_already_exists";
pub const NO_SUCH_REGISTRATION: &str = "wamp.error.no_such_registration";
pub const NO_SUCH_SUBSCRIPTION: &str = "wamp.error.no_such_subscription";
pub const NO_SUCH_SESSION: &str = "wamp.error.no_such_session";
pub const INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";
pub const PAYLOAD_SIZE_EXCEEDED: &str = "wamp.error.payload_size_exceeded";
pub const CANCELED: &str = "wamp.error.canceled";
pub const TIMEOUT: &str = "wamp.error.timeout";
pub const NOT_AUTHORIZED: &str = "wamp.error.not_authorized";
pub const NO_SUCH_REALM: &str = "wamp.error.no_such_realm";
pub const NO_SUCH_ROLE: &str = "wamp.error.no_such_role";
pub const NO_SUCH_PRINCIPAL: &str = "wamp.error.no_such_principal";
pub const NO_MATCHING_AUTH_METHOD: &str = "wamp.error.no_matching_auth_method";
pub const AUTHENTICATION_FAILED: &str = "wamp.error.authentication_failed";
pub const AUTHENTICATION_DENIED: &str = "wamp.error.authentication_denied";
pub const PROTOCOL_VIOLATION: &str = "wamp.error.protocol_violation";
pub const OPTION_NOT_ALLOWED: &str = "wamp.error.option_not_allowed";
pub const FEATURE_NOT_SUPPORTED: &str = "wamp.error.feature_not_supported";
pub const NO_AVAILABLE_CALLEE: &str = "wamp.error.no_available_callee";
pub const UNAVAILABLE: &str = "wamp.error.unavailable";
/// A callee failed without saying why (an invocation dropped unanswered).
pub const RUNTIME_ERROR: &str = "wamp.error.runtime_error";

pub const CLOSE_SYSTEM_SHUTDOWN: &str = "wamp.close.system_shutdown";
pub const CLOSE_REALM: &str = "wamp.close.close_realm";
pub const CLOSE_GOODBYE_AND_OUT: &str = "wamp.close.goodbye_and_out";
pub const CLOSE_KILLED: &str = "wamp.close.killed";
pub const CLOSE_NORMAL: &str = "wamp.close.normal";

/// The meta API: procedures the router answers itself, and the meta events it publishes.
pub mod meta {
    pub const SESSION_PREFIX: &str = "wamp.session.";
    pub const REGISTRATION_PREFIX: &str = "wamp.registration.";
    pub const SUBSCRIPTION_PREFIX: &str = "wamp.subscription.";

    pub const SESSION_COUNT: &str = "wamp.session.count";
    pub const SESSION_LIST: &str = "wamp.session.list";
    pub const SESSION_GET: &str = "wamp.session.get";
    pub const SESSION_KILL: &str = "wamp.session.kill";
    pub const SESSION_KILL_BY_AUTHID: &str = "wamp.session.kill_by_authid";
    pub const SESSION_KILL_BY_AUTHROLE: &str = "wamp.session.kill_by_authrole";
    pub const SESSION_KILL_ALL: &str = "wamp.session.kill_all";
    pub const SESSION_ADD_TESTAMENT: &str = "wamp.session.add_testament";
    pub const SESSION_FLUSH_TESTAMENTS: &str = "wamp.session.flush_testaments";

    pub const REGISTRATION_LIST: &str = "wamp.registration.list";
    pub const REGISTRATION_LOOKUP: &str = "wamp.registration.lookup";
    pub const REGISTRATION_MATCH: &str = "wamp.registration.match";
    pub const REGISTRATION_GET: &str = "wamp.registration.get";
    pub const REGISTRATION_LIST_CALLEES: &str = "wamp.registration.list_callees";
    pub const REGISTRATION_COUNT_CALLEES: &str = "wamp.registration.count_callees";
    pub const REGISTRATION_REMOVE: &str = "wamp.registration.remove";

    pub const SUBSCRIPTION_LIST: &str = "wamp.subscription.list";
    pub const SUBSCRIPTION_LOOKUP: &str = "wamp.subscription.lookup";
    pub const SUBSCRIPTION_MATCH: &str = "wamp.subscription.match";
    pub const SUBSCRIPTION_GET: &str = "wamp.subscription.get";
    pub const SUBSCRIPTION_LIST_SUBSCRIBERS: &str = "wamp.subscription.list_subscribers";
    pub const SUBSCRIPTION_COUNT_SUBSCRIBERS: &str = "wamp.subscription.count_subscribers";
    pub const SUBSCRIPTION_GET_EVENTS: &str = "wamp.subscription.get_events";
    pub const SUBSCRIPTION_REMOVE: &str = "wamp.subscription.remove";

    pub const ON_JOIN: &str = "wamp.session.on_join";
    pub const ON_LEAVE: &str = "wamp.session.on_leave";
    pub const REGISTRATION_ON_CREATE: &str = "wamp.registration.on_create";
    pub const REGISTRATION_ON_REGISTER: &str = "wamp.registration.on_register";
    pub const REGISTRATION_ON_UNREGISTER: &str = "wamp.registration.on_unregister";
    pub const REGISTRATION_ON_DELETE: &str = "wamp.registration.on_delete";
    pub const SUBSCRIPTION_ON_CREATE: &str = "wamp.subscription.on_create";
    pub const SUBSCRIPTION_ON_SUBSCRIBE: &str = "wamp.subscription.on_subscribe";
    pub const SUBSCRIPTION_ON_UNSUBSCRIBE: &str = "wamp.subscription.on_unsubscribe";
    pub const SUBSCRIPTION_ON_DELETE: &str = "wamp.subscription.on_delete";
}

/// Revocation reasons (UNREGISTERED / UNSUBSCRIBED `details.reason`).
pub const REVOKED_FORCE_REREGISTERED: &str = "wamp.error.force_reregistered";
