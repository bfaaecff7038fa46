//! Per-route authorization rules (SPEC §13): `[[rules]]`, the first whose path and
//! method match a request decides; no match means authentication only.
//!
//! A rule requires scopes (all of them, read from the token's `scope`, a space-separated
//! string, and `scp`, an array or a space-separated string) and claims (each equal to
//! a string, or an array holding it). A live token that fails the rule of its route is
//! refused with 403 `insufficient_scope` (RFC 6750 §3.1) and the backend sees nothing.
//!
//! What a token satisfies depends only on its claims, so it is worked out once, when a
//! verdict is made ([`Rules::grants`]), and kept with the verdict in the cache; a
//! request then only finds its rule and reads one bit. The rules themselves are parsed
//! and checked by [`crate::config`] (bad paths, empty lists, unknown methods, rules
//! that can never match).

use http::header::HeaderValue;
use http::Method;
use serde_json::{Map, Value};

use crate::config::PathPattern;

/// One `[[rules]]` entry, validated.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The paths it covers.
    pub path: PathPattern,
    /// The methods it covers; `None`: every method.
    pub methods: Option<Vec<Method>>,
    /// Scopes the token must all carry.
    pub scopes: Vec<String>,
    /// Claims the token must carry with these values.
    pub claims: Vec<(String, String)>,
    /// The `WWW-Authenticate` value of a refusal under this rule.
    challenge: HeaderValue,
}

impl Rule {
    /// A rule; `scopes` are scope tokens (RFC 6749 §3.3), checked by the config.
    pub fn new(
        path: PathPattern,
        methods: Option<Vec<Method>>,
        scopes: Vec<String>,
        claims: Vec<(String, String)>,
    ) -> Rule {
        let mut challenge =
            String::from("Bearer realm=\"tokengate\", error=\"insufficient_scope\"");
        if !scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
        Rule {
            path,
            methods,
            scopes,
            claims,
            // Scope tokens exclude `"`, `\` and controls; the realm is ours.
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"tokengate\"")),
        }
    }

    /// Whether the rule covers a request.
    pub fn covers(&self, method: &Method, path: &str) -> bool {
        self.path.matches(path)
            && self
                .methods
                .as_ref()
                .is_none_or(|methods| methods.contains(method))
    }

    /// Whether a token's claims satisfy the rule.
    pub fn allows(&self, claims: &Map<String, Value>) -> bool {
        let scopes = granted_scopes(claims);
        self.scopes.iter().all(|s| scopes.contains(&s.as_str()))
            && self
                .claims
                .iter()
                .all(|(claim, value)| crate::jwt::claim_holds(claims, claim, value))
    }

    /// The `WWW-Authenticate` challenge of a token this rule refuses.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    /// The required scopes, space-separated (for the JSON body of a refusal).
    pub fn scope_text(&self) -> String {
        self.scopes.join(" ")
    }
}

/// The scopes a token carries: `scope` (space-separated, RFC 8693 §4.2) and `scp` (an
/// array, or a space-separated string as some providers write it).
fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_ascii_whitespace()),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// The rules of a config, in file order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// Which rules a token satisfies, by index: worked out once per verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Box<[bool]>);

impl Grants {
    /// Whether the token satisfies rule `index`.
    pub fn allows(&self, index: usize) -> bool {
        self.0.get(index).copied().unwrap_or(false)
    }
}

impl Rules {
    /// The rules, in the order they are tried.
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    /// Whether there is no rule (every live token passes every route).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The first rule covering a request, with its index.
    pub fn find(&self, method: &Method, path: &str) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.covers(method, path))
    }

    /// Which rules a token's claims satisfy.
    pub fn grants(&self, claims: &Map<String, Value>) -> Grants {
        Grants(self.rules.iter().map(|rule| rule.allows(claims)).collect())
    }

    /// The rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn rule(
        path: &str,
        methods: Option<&[&str]>,
        scopes: &[&str],
        claims: &[(&str, &str)],
    ) -> Rule {
        let path = match path.strip_suffix('*') {
            Some(p) => PathPattern::Prefix(p.into()),
            None => PathPattern::Exact(path.into()),
        };
        Rule::new(
            path,
            methods.map(|m| m.iter().map(|m| m.parse().unwrap()).collect()),
            scopes.iter().map(|s| s.to_string()).collect(),
            claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn scopes_come_from_scope_and_scp_and_all_are_required() {
        let r = rule("/orders/*", None, &["orders:read", "orders:write"], &[]);
        assert!(r.allows(&claims(
            json!({"scope": "orders:read orders:write profile"})
        )));
        assert!(r.allows(&claims(json!({"scp": ["orders:write", "orders:read"]}))));
        assert!(r.allows(&claims(json!({"scp": "orders:read  orders:write"}))));
        assert!(r.allows(&claims(
            json!({"scope": "orders:read", "scp": ["orders:write"]})
        )));
        assert!(!r.allows(&claims(json!({"scope": "orders:read"}))));
        assert!(!r.allows(&claims(json!({"scope": "orders:read,orders:write"}))));
        assert!(!r.allows(&claims(json!({}))));
    }

    #[test]
    fn claims_equal_the_string_or_an_array_holds_it() {
        let r = rule("/admin/*", None, &[], &[("role", "admin")]);
        assert!(r.allows(&claims(json!({"role": "admin"}))));
        assert!(r.allows(&claims(json!({"role": ["user", "admin"]}))));
        assert!(!r.allows(&claims(json!({"role": "Admin"}))));
        assert!(!r.allows(&claims(json!({"role": ["user"]}))));
        assert!(!r.allows(&claims(json!({"role": true}))));
        assert!(!r.allows(&claims(json!({}))));
    }

    #[test]
    fn the_first_rule_covering_path_and_method_decides() {
        let rules = Rules::new(vec![
            rule("/admin/health", None, &[], &[]),
            rule("/admin/*", Some(&["POST", "DELETE"]), &["admin"], &[]),
            rule("/admin/*", None, &["read"], &[]),
        ]);
        let find = |m: &str, p: &str| rules.find(&m.parse().unwrap(), p).map(|(i, _)| i);
        assert_eq!(find("POST", "/admin/health"), Some(0));
        assert_eq!(find("POST", "/admin/users"), Some(1));
        assert_eq!(find("GET", "/admin/users"), Some(2));
        assert_eq!(find("GET", "/other"), None);
        let grants = rules.grants(&claims(json!({"scope": "read"})));
        assert!(grants.allows(0) && !grants.allows(1) && grants.allows(2));
        assert!(!grants.allows(3));
    }

    #[test]
    fn the_challenge_names_the_required_scopes() {
        let r = rule("/a", None, &["a:b", "c"], &[]);
        assert_eq!(
            r.challenge(),
            "Bearer realm=\"tokengate\", error=\"insufficient_scope\", scope=\"a:b c\""
        );
        let r = rule("/a", None, &[], &[("role", "admin")]);
        assert_eq!(
            r.challenge(),
            "Bearer realm=\"tokengate\", error=\"insufficient_scope\""
        );
    }
}
