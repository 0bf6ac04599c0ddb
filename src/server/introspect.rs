//! `STRATA`, strata's own introspection command: which tier a key belongs to, the tiers and
//! their TTL policy, and the command table in use.

use super::action::RouteContext;
use bytes::Bytes;

use super::local::text;
use crate::command::TableSource;
use crate::config::PersistPolicy;
use crate::resp::Reply;
use crate::tier::TierTable;

/// `STRATA GETKEYS cmd args…` and `STRATA COMMANDS`: introspection for operators and tests.
pub fn strata(ctx: &RouteContext, argv: &[&[u8]]) -> Reply {
    let sub = argv.get(1).map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    match sub.as_slice() {
        b"getkeys" if argv.len() > 2 => match ctx.commands.lookup(&argv[2..]) {
            None => Reply::err(format!("unknown command '{}'", text(argv[2]))),
            Some(_) => match ctx.commands.keys(&argv[2..]) {
                Ok(keys) => Reply::Array(
                    keys.iter().map(|k| Reply::Bulk(Bytes::copy_from_slice(argv[2 + k.index]))).collect(),
                ),
                Err(e) => Reply::err(format!("cannot find keys: {e}")),
            },
        },
        b"commands" => Reply::Map(vec![
            (
                Reply::text("source"),
                Reply::text(match ctx.commands.source() {
                    TableSource::Upstream => "upstream",
                    TableSource::Builtin => "builtin",
                }),
            ),
            (Reply::text("count"), Reply::Int(ctx.commands.len() as i64)),
        ]),
        b"tier" if argv.len() == 3 => tier_of(ctx.tiers, argv[2]),
        b"tiers" if argv.len() == 2 => Reply::Array(
            ctx.tiers.tiers().iter().enumerate().map(|(id, _)| describe_tier(ctx.tiers, id as u16)).collect(),
        ),
        _ => Reply::err(
            "unknown STRATA subcommand; try STRATA GETKEYS <command> [args…], STRATA COMMANDS, STRATA TIER <key> or STRATA TIERS",
        ),
    }
}

/// `STRATA TIER key`: the tier, the rule that chose it and the policy, or `untiered`.
fn tier_of(tiers: &TierTable, key: &[u8]) -> Reply {
    match tiers.classify(key) {
        None => Reply::Map(vec![(Reply::text("tier"), Reply::text("untiered"))]),
        Some(class) => {
            let rule = &tiers.rules()[class.rule as usize];
            let mut fields = tier_fields(tiers, class.tier);
            let kind = if rule.is_pattern { "pattern" } else { "prefix" };
            fields.insert(1, (Reply::text(kind), Reply::text(rule.text.clone())));
            Reply::Map(fields)
        }
    }
}

/// One tier as a map: name, prefixes, patterns and every policy field.
fn describe_tier(tiers: &TierTable, id: u16) -> Reply {
    Reply::Map(tier_fields(tiers, id))
}

fn tier_fields(tiers: &TierTable, id: u16) -> Vec<(Reply, Reply)> {
    let tier = tiers.tier(id);
    let rules = |patterns: bool| {
        Reply::Array(
            tiers
                .rules()
                .iter()
                .filter(|r| r.tier == id && r.is_pattern == patterns)
                .map(|r| Reply::text(r.text.clone()))
                .collect(),
        )
    };
    let p = &tier.policy;
    let ms = |v: Option<u64>| v.map_or(Reply::Null, |ms| Reply::Int(ms as i64));
    vec![
        (Reply::text("tier"), Reply::text(tier.name.clone())),
        (Reply::text("prefixes"), rules(false)),
        (Reply::text("patterns"), rules(true)),
        (Reply::text("default_ttl_ms"), ms(p.default_ms)),
        (Reply::text("min_ttl_ms"), ms(p.min_ms)),
        (Reply::text("max_ttl_ms"), ms(p.max_ms)),
        (Reply::text("jitter_ms"), Reply::Int(p.jitter_ms as i64)),
        (Reply::text("sliding"), Reply::Int(i64::from(p.sliding))),
        (Reply::text("persist"), Reply::text(if p.persist == PersistPolicy::Deny { "deny" } else { "max" })),
    ]
}
