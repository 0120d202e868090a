//! Deterministic, realistic Events API v2 items: audit events, item usages and sign-in attempts.
//!
//! An item is a pure function of the simulator's [`World`] (itself a function of the seed), the
//! stream, the item's index in that stream and its insertion time.
//! Nothing is stored but insertion times, so serving a page regenerates its items, and the bytes
//! are the same every time.
//!
//! The JSON is written by hand, in the field order of the 1.4.1 schemas and with Go's
//! `encoding/json` escaping (`<`, `>`, `&` as `\u003c`…), because the real API is a Go service and
//! a forwarder must pass its bytes through untouched.

use std::fmt::Write as _;

use time::{OffsetDateTime, UtcOffset};

use crate::stream::Stream;

/// How many ordinary users the simulated account has, besides the special ones in [`SPECIAL_USERS`].
const N_USERS: usize = 40;
/// How many vaults the simulated account has.
const N_VAULTS: usize = 16;
/// How many items the simulated account has, spread over its vaults.
const N_ITEMS: usize = 240;
/// How many groups the simulated account has.
const N_GROUPS: usize = 10;
/// How many other accounts (MSP managed or managing) appear in `*_account_uuid` fields.
const N_OTHER_ACCOUNTS: usize = 3;

/// A small, fast, deterministic PRNG (splitmix64); plenty for synthetic data, useless for secrets.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A uniform number in `0..n`; `n` must not be zero.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // The modulo bias is at most n / 2^64, irrelevant here.
        self.next_u64() % n
    }

    /// A uniform number in `low..high`; `high` must be greater than `low`.
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    /// True with a probability of `percent` in a hundred.
    pub(crate) fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The splitmix64 finaliser: a good 64-bit mixing function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combines two values into one well-mixed seed.
pub(crate) fn combine(a: u64, b: u64) -> u64 {
    mix64(a ^ mix64(b.wrapping_add(0x632B_E59B_D9B4_E019)))
}

/// A 64-bit hash of a string, for seeding from text (tokens).
pub(crate) fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Which alphabet an id uses: events, users and accounts are upper case, vaults, items and devices lower case.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Case {
    Upper,
    Lower,
}

/// A 26-character base32 id, the shape 1Password uses for every uuid.
pub(crate) fn id(rng: &mut Rng, case: Case) -> String {
    const UPPER: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let alphabet = match case {
        Case::Upper => UPPER,
        Case::Lower => LOWER,
    };
    let mut bits = rng.next_u64();
    let mut out = String::with_capacity(26);
    for char_idx in 0..26 {
        // Twelve 5-bit symbols fit in one draw.
        if char_idx == 12 || char_idx == 24 {
            bits = rng.next_u64();
        }
        out.push(char::from(alphabet[(bits & 31) as usize]));
        bits >>= 5;
    }
    out
}

/// A person in the simulated account.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) uuid: String,
    pub(crate) name: String,
    pub(crate) email: String,
    /// The user's devices (lower-case ids).
    pub(crate) devices: Vec<String>,
}

/// Everything events refer to: the account, its people, vaults, items and groups, fixed by the seed.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) account_uuid: String,
    pub(crate) other_accounts: Vec<String>,
    pub(crate) users: Vec<User>,
    pub(crate) vaults: Vec<String>,
    /// Items as (vault index, item id).
    pub(crate) items: Vec<(usize, String)>,
    pub(crate) groups: Vec<String>,
}

impl World {
    pub(crate) fn new(seed: u64) -> World {
        let mut rng = Rng::new(combine(seed, 0x005E_ED0F_0A11));
        let account_uuid = id(&mut rng, Case::Upper);
        let other_accounts = (0..N_OTHER_ACCOUNTS)
            .map(|_| id(&mut rng, Case::Upper))
            .collect();
        let mut users = Vec::with_capacity(SPECIAL_USERS.len() + N_USERS);
        for (name, local) in SPECIAL_USERS {
            let domain = rng.pick(DOMAINS);
            users.push(new_user(
                &mut rng,
                (*name).to_owned(),
                format!("{local}@{domain}"),
            ));
        }
        for user_idx in 0..N_USERS {
            let (first, first_ascii) = *rng.pick(FIRST_NAMES);
            let (last, last_ascii) = *rng.pick(LAST_NAMES);
            let domain = rng.pick(DOMAINS);
            let email = match user_idx % 9 {
                0 => format!("{first_ascii}+ops@{domain}"),
                _ => format!("{first_ascii}.{last_ascii}@{domain}"),
            };
            users.push(new_user(&mut rng, format!("{first} {last}"), email));
        }
        let vaults: Vec<String> = (0..N_VAULTS).map(|_| id(&mut rng, Case::Lower)).collect();
        let items = (0..N_ITEMS)
            .map(|_| {
                (
                    rng.below(N_VAULTS as u64) as usize,
                    id(&mut rng, Case::Lower),
                )
            })
            .collect();
        let groups = (0..N_GROUPS).map(|_| id(&mut rng, Case::Upper)).collect();
        World {
            seed,
            account_uuid,
            other_accounts,
            users,
            vaults,
            items,
            groups,
        }
    }
}

fn new_user(rng: &mut Rng, name: String, email: String) -> User {
    let uuid = id(rng, Case::Upper);
    let devices = (0..rng.range(1, 4)).map(|_| id(rng, Case::Lower)).collect();
    User {
        uuid,
        name,
        email,
        devices,
    }
}

/// Which schema an item is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// `/api/v1/…`, spec 1.2.0: no MSP fields (`actor_type`, `*account_uuid`, `user_type`),
    /// `User` instead of `UserV2`, and only the enum values that spec lists.
    V1,
    /// `/api/v2/…`, docs 1.4.1.
    V2,
}

/// The PRNG that decides everything about one item. The v3 audit stream is the audit log seen
/// through the beta endpoint: same events, same uuids.
fn item_rng(seed: u64, stream: Stream, index: u64) -> Rng {
    let salt = match stream {
        Stream::AuditEvents | Stream::AuditV3 => 0xA0D1,
        Stream::ItemUsages => 0x17E4,
        Stream::SignInAttempts => 0x5161,
    };
    Rng::new(combine(combine(seed, salt), index))
}

/// The uuid of item `index` of `stream`, without generating the rest of it.
pub(crate) fn item_uuid(world: &World, stream: Stream, index: u64) -> String {
    id(&mut item_rng(world.seed, stream, index), Case::Upper)
}

/// Appends item `index` of `stream`, inserted at `inserted_at`, to `out` as compact v2 JSON
/// (for [`Stream::AuditV3`], a v3 event).
pub(crate) fn write_item(
    world: &World,
    stream: Stream,
    index: u64,
    inserted_at: OffsetDateTime,
    out: &mut String,
) {
    write_item_as(world, stream, Schema::V2, index, inserted_at, out);
}

/// [`write_item`] in the given schema (which only the cursor streams distinguish).
pub(crate) fn write_item_as(
    world: &World,
    stream: Stream,
    schema: Schema,
    index: u64,
    inserted_at: OffsetDateTime,
    out: &mut String,
) {
    let mut rng = item_rng(world.seed, stream, index);
    // The uuid must come first so that `item_uuid` agrees with it.
    let uuid = id(&mut rng, Case::Upper);
    let time = event_time(&mut rng, stream, inserted_at);
    let style = TimeStyle::new(&mut rng);
    let item = Item {
        world,
        uuid: &uuid,
        time,
        style,
        schema,
    };
    match stream {
        Stream::AuditEvents => write_audit_event(&item, &mut rng, out),
        Stream::AuditV3 => write_audit_v3_event(&item, inserted_at, &mut rng, out),
        Stream::ItemUsages => write_item_usage(&item, &mut rng, out),
        Stream::SignInAttempts => write_sign_in_attempt(&item, &mut rng, out),
    }
}

/// What every item writer needs besides the PRNG.
struct Item<'a> {
    world: &'a World,
    uuid: &'a str,
    time: OffsetDateTime,
    style: TimeStyle,
    schema: Schema,
}

impl Item<'_> {
    /// The MSP fields to write: none in v1.
    fn msp(&self, msp: Msp) -> Msp {
        match self.schema {
            Schema::V1 => Msp::Absent,
            Schema::V2 => msp,
        }
    }

    /// An enum value as this schema may carry it: v1 serves only spec 1.2.0's values, so the
    /// few added later are replaced by the nearest older one (`None`: leave the field out).
    fn v1_value<'v>(&self, value: &'v str) -> Option<&'v str> {
        if self.schema == Schema::V2 {
            return Some(value);
        }
        Some(match value {
            // Audit actions added in 1.3.0 and 1.4.1.
            "expire" | "unlink" | "launchi" => "update",
            // Audit object types added with passkeys and MSP accounts.
            "cred" => "item",
            "mngdacc" => "account",
            // Sign-in type added in 1.4.0; spec 1.2.0 misspells u2f_timeout, so avoid it.
            "federated" => "credentials_ok",
            "u2f_timeout" => "u2f_bad",
            // Item usage action added in 1.4.1.
            "other" => return None,
            other => other,
        })
    }
}

/// When the event happened: a moment before it was inserted, or hours before for late arrivals.
fn event_time(rng: &mut Rng, stream: Stream, inserted_at: OffsetDateTime) -> OffsetDateTime {
    const SECOND: u64 = 1_000_000_000;
    const HOUR: u64 = 3600 * SECOND;
    let delay_ns = if rng.percent(5) {
        match stream {
            // Devices sync offline item usage up to about a day later.
            Stream::ItemUsages => rng.range(HOUR / 2, 26 * HOUR),
            Stream::AuditEvents | Stream::SignInAttempts | Stream::AuditV3 => {
                rng.range(HOUR, 6 * HOUR)
            }
        }
    } else {
        rng.below(3 * SECOND)
    };
    let delay = time::Duration::nanoseconds(delay_ns as i64);
    inserted_at.checked_sub(delay).unwrap_or(inserted_at)
}

/// How an item writes its timestamps: which offset, and how many fractional digits before trimming.
#[derive(Debug, Clone, Copy)]
struct TimeStyle {
    offset: UtcOffset,
    digits: u32,
}

impl TimeStyle {
    fn new(rng: &mut Rng) -> TimeStyle {
        // Offsets in whole minutes east of UTC; `Z` dominates.
        const OFFSETS: &[i32] = &[-180, 330, -420, 60, 540, -240, 345, -150, 120];
        let minutes = if rng.percent(75) {
            0
        } else {
            *rng.pick(OFFSETS)
        };
        let offset = UtcOffset::from_whole_seconds(minutes * 60).unwrap_or(UtcOffset::UTC);
        let digits = match rng.below(20) {
            0..=11 => 9,
            12..=14 => 3,
            15..=16 => 6,
            _ => 0,
        };
        TimeStyle { offset, digits }
    }

    fn format(self, t: OffsetDateTime) -> String {
        format_rfc3339(t, self.offset, self.digits)
    }
}

/// Formats `t` as RFC 3339 in `offset` the way Go's `time.RFC3339Nano` does: at most `digits`
/// fractional digits (truncated), trailing zeros trimmed, `Z` for UTC.
pub(crate) fn format_rfc3339(t: OffsetDateTime, offset: UtcOffset, digits: u32) -> String {
    let local = t.checked_to_offset(offset).unwrap_or(t);
    let mut out = String::with_capacity(35);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    );
    let digits = digits.min(9);
    let fraction = local.nanosecond() / 10u32.pow(9 - digits);
    if digits > 0 && fraction > 0 {
        let mut text = format!("{fraction:0width$}", width = digits as usize);
        while text.ends_with('0') {
            text.pop();
        }
        out.push('.');
        out.push_str(&text);
    }
    let offset = local.offset();
    if offset.is_utc() {
        out.push('Z');
    } else {
        let total = offset.whole_minutes();
        let sign = if total < 0 { '-' } else { '+' };
        let _ = write!(out, "{sign}{:02}:{:02}", total.abs() / 60, total.abs() % 60);
    }
    out
}

/// Appends `value` as a JSON string with Go's `encoding/json` escaping.
pub(crate) fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one JSON object, key by key, into a borrowed buffer.
pub(crate) struct JsonObject<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    pub(crate) fn new(out: &'a mut String) -> JsonObject<'a> {
        out.push('{');
        JsonObject { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_json_string(self.out, key);
        self.out.push(':');
    }

    pub(crate) fn string(&mut self, key: &str, value: impl AsRef<str>) {
        self.key(key);
        push_json_string(self.out, value.as_ref());
    }

    pub(crate) fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    pub(crate) fn float(&mut self, key: &str, value: f64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    pub(crate) fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    pub(crate) fn object(&mut self, key: &str, build: impl FnOnce(&mut JsonObject<'_>)) {
        self.key(key);
        let mut inner = JsonObject::new(self.out);
        build(&mut inner);
        inner.finish();
    }

    pub(crate) fn finish(self) {
        self.out.push('}');
    }
}

/// Which of the MSP-only fields an item carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Msp {
    /// A plain business account: no MSP fields at all.
    Absent,
    /// `actor_type: "user"` only, as seen in sanitized production data.
    TypeOnly,
    /// A member of the account itself, with every MSP field filled in.
    Member,
    /// A user of a managing (MSP) account acting in this one.
    External,
}

impl Msp {
    fn pick(rng: &mut Rng, stream: Stream) -> Msp {
        let roll = rng.below(100);
        match stream {
            Stream::AuditEvents | Stream::AuditV3 => match roll {
                0..=44 => Msp::Absent,
                45..=69 => Msp::TypeOnly,
                70..=89 => Msp::Member,
                _ => Msp::External,
            },
            Stream::ItemUsages | Stream::SignInAttempts => match roll {
                0..=69 => Msp::Absent,
                70..=89 => Msp::Member,
                _ => Msp::External,
            },
        }
    }

    fn user_type(self) -> &'static str {
        match self {
            Msp::External => "external_user",
            Msp::Absent | Msp::TypeOnly | Msp::Member => "user",
        }
    }

    /// The account the acting user belongs to.
    fn user_account<'w>(self, world: &'w World, rng: &mut Rng) -> &'w str {
        match self {
            Msp::External => rng.pick(&world.other_accounts).as_str(),
            Msp::Absent | Msp::TypeOnly | Msp::Member => &world.account_uuid,
        }
    }
}

/// Writes a UserV2 object: `uuid`, `name`, `email`, and the MSP-only fields when `msp` says so.
fn write_user(o: &mut JsonObject<'_>, user: &User, msp: Msp, user_account: &str, sparse: bool) {
    if !sparse {
        o.string("uuid", &user.uuid);
    }
    o.string("name", &user.name);
    o.string("email", &user.email);
    if matches!(msp, Msp::Member | Msp::External) {
        o.string("user_type", msp.user_type());
        o.string("user_account_uuid", user_account);
    }
}

/// Writes an object-details / aux-details object: `uuid`, `name`, `email`.
fn write_details(o: &mut JsonObject<'_>, user: &User) {
    o.string("uuid", &user.uuid);
    o.string("name", &user.name);
    o.string("email", &user.email);
}

/// What the audit event's object is, which decides `object_uuid`, `object_details` and the `aux_*` fields.
#[derive(Debug, Clone, Copy)]
enum Target {
    User,
    GroupMember,
    Group,
    Vault,
    UserVaultAccess,
    GroupVaultAccess,
    Item,
    ItemShare,
    Device,
    Invite,
    Account,
    File,
    Report,
    Plain,
}

/// Realistic (object_type, action, target) combinations, drawn most of the time.
const AUDIT_TEMPLATES: &[(&str, &str, Target)] = &[
    ("user", "suspend", Target::User),
    ("user", "reactive", Target::User),
    ("user", "activate", Target::User),
    ("user", "delete", Target::User),
    ("user", "provsn", Target::User),
    ("user", "upguest", Target::User),
    ("user", "beginr", Target::User),
    ("user", "completr", Target::User),
    ("user", "changemp", Target::User),
    ("user", "enblmfa", Target::User),
    ("user", "trvlaway", Target::User),
    ("user", "trvlback", Target::User),
    ("gm", "join", Target::GroupMember),
    ("gm", "leave", Target::GroupMember),
    ("gm", "role", Target::GroupMember),
    ("group", "create", Target::Group),
    ("group", "update", Target::Group),
    ("group", "delete", Target::Group),
    ("vault", "create", Target::Vault),
    ("vault", "update", Target::Vault),
    ("vault", "delete", Target::Vault),
    ("vault", "export", Target::Vault),
    ("uva", "grant", Target::UserVaultAccess),
    ("uva", "revoke", Target::UserVaultAccess),
    ("uva", "update", Target::UserVaultAccess),
    ("gva", "grant", Target::GroupVaultAccess),
    ("gva", "revoke", Target::GroupVaultAccess),
    ("item", "delete", Target::Item),
    ("item", "purge", Target::Item),
    ("item", "share", Target::ItemShare),
    ("item", "delshare", Target::ItemShare),
    ("items", "export", Target::Vault),
    ("itemhist", "purge", Target::Item),
    ("device", "create", Target::Device),
    ("device", "update", Target::Device),
    ("device", "deolddev", Target::Device),
    ("device", "dealldev", Target::Device),
    ("device", "reauth", Target::Device),
    ("device", "delete", Target::Device),
    ("invite", "create", Target::Invite),
    ("invite", "cancel", Target::Invite),
    ("account", "updatfw", Target::Account),
    ("account", "update", Target::Account),
    ("account", "changenm", Target::Account),
    ("account", "vrfydmn", Target::Account),
    ("sso", "enblsso", Target::Account),
    ("sso", "chngpsso", Target::Account),
    ("ssotkn", "ssotknv", Target::Plain),
    ("sa", "create", Target::Plain),
    ("satoken", "create", Target::Plain),
    ("satoken", "revoke", Target::Plain),
    ("satoken", "expire", Target::Plain),
    ("report", "view", Target::Report),
    ("cred", "create", Target::Item),
    ("cred", "delete", Target::Item),
    ("file", "create", Target::File),
    ("slackapp", "create", Target::Plain),
    ("mngdacc", "unlink", Target::Account),
    ("mngdacc", "launchi", Target::Account),
    ("dlgdsess", "dlgsess", Target::User),
    ("famchild", "rdmchild", Target::User),
    ("template", "create", Target::Plain),
    ("vaultkey", "replace", Target::Vault),
];

/// Every documented audit action (spec 1.2.0's 76, plus `expire`, `unlink`, `launchi`).
#[rustfmt::skip]
const AUDIT_ACTIONS: &[&str] = &[
    "activate", "update", "delete", "convert", "enblduo", "updatduo", "disblduo", "rdmchild",
    "detchild", "dlgsess", "create", "deolddev", "dealldev", "reauth", "begin", "complete",
    "propose", "updatfw", "join", "leave", "role", "purge", "view", "export", "replace", "grant",
    "revoke", "share", "delshare", "uisas", "enblmfa", "updatmfa", "disblmfa", "musercom",
    "muserdec", "sendpkg", "resendts", "prsndall", "trename", "tverify", "trevoke", "ssotknv",
    "enblsso", "disblsso", "chngpsso", "chngasso", "chngdsso", "delgsso", "addgsso", "cancel",
    "hide", "unhide", "upguest", "verify", "reactive", "suspend", "beginr", "provsn", "sendts",
    "unknown", "completr", "cancelr", "trvlaway", "trvlback", "changeks", "changemp", "changesk",
    "changenm", "changela", "tdvcsso", "sdvcsso", "patch", "updatea", "vrfydmn", "uvrfydmn",
    "dvrfydmn", "expire", "unlink", "launchi",
];

/// Every documented audit object type.
#[rustfmt::skip]
const AUDIT_OBJECT_TYPES: &[&str] = &[
    "account", "user", "device", "group", "gm", "vault", "item", "items", "itemhist", "vaultkey",
    "template", "uva", "gva", "invite", "ec", "miguser", "sso", "sub", "card", "pm", "slackapp",
    "file", "famchild", "sa", "satoken", "dlgdsess", "ssotkn", "report", "cred", "mngdacc",
];

fn write_audit_event(item: &Item<'_>, rng: &mut Rng, out: &mut String) {
    let world = item.world;
    let msp = Msp::pick(rng, Stream::AuditEvents);
    let actor = rng.pick(&world.users);
    let actor_account = msp.user_account(world, rng);
    // Sparse events carry names without uuids, like sanitized production data.
    let sparse = rng.percent(8);
    let (object_type, action, target) = if rng.percent(4) {
        (
            *rng.pick(AUDIT_OBJECT_TYPES),
            *rng.pick(AUDIT_ACTIONS),
            Target::Plain,
        )
    } else {
        *rng.pick(AUDIT_TEMPLATES)
    };

    let written_msp = item.msp(msp);
    let mut o = JsonObject::new(out);
    o.string("uuid", item.uuid);
    o.string("timestamp", item.style.format(item.time));
    if !sparse {
        o.string("actor_uuid", &actor.uuid);
    }
    o.object("actor_details", |d| {
        write_user(d, actor, written_msp, actor_account, sparse)
    });
    o.string("action", item.v1_value(action).unwrap_or(action));
    o.string(
        "object_type",
        item.v1_value(object_type).unwrap_or(object_type),
    );
    write_audit_target(&mut o, item, rng, target);
    if !rng.percent(5) {
        // The session began up to eight hours before the event.
        let login_delay = time::Duration::nanoseconds(rng.below(8 * 3600 * 1_000_000_000) as i64);
        let login = item.time.checked_sub(login_delay).unwrap_or(item.time);
        let device = rng.pick(&actor.devices);
        o.object("session", |s| {
            if !sparse {
                s.string("uuid", id(rng, Case::Upper));
            }
            s.string("login_time", item.style.format(login));
            if !sparse {
                s.string("device_uuid", device);
            }
            s.string("ip", ip_address(rng));
        });
    }
    write_location(&mut o, rng);
    match written_msp {
        Msp::Absent => {}
        Msp::TypeOnly => o.string("actor_type", "user"),
        Msp::Member | Msp::External => {
            o.string("actor_type", msp.user_type());
            o.string("actor_account_uuid", actor_account);
            o.string("account_uuid", &world.account_uuid);
        }
    }
    o.finish();
}

fn write_audit_target(o: &mut JsonObject<'_>, item: &Item<'_>, rng: &mut Rng, target: Target) {
    let world = item.world;
    match target {
        Target::User => {
            let user = rng.pick(&world.users);
            o.string("object_uuid", &user.uuid);
            o.object("object_details", |d| write_details(d, user));
        }
        Target::GroupMember => {
            let user = rng.pick(&world.users);
            o.string("object_uuid", rng.pick(&world.groups));
            o.string("aux_uuid", &user.uuid);
            o.object("aux_details", |d| write_details(d, user));
            o.string("aux_info", rng.pick(&["A", "M", "R"]));
        }
        Target::Group => o.string("object_uuid", rng.pick(&world.groups)),
        Target::Vault => o.string("object_uuid", rng.pick(&world.vaults)),
        Target::UserVaultAccess => {
            let user = rng.pick(&world.users);
            o.string("object_uuid", rng.pick(&world.vaults));
            o.string("aux_uuid", &user.uuid);
            o.object("aux_details", |d| write_details(d, user));
            o.string("aux_info", rng.pick(&["1048560", "32", "126", "1012"]));
        }
        Target::GroupVaultAccess => {
            o.string("object_uuid", rng.pick(&world.vaults));
            o.string("aux_uuid", rng.pick(&world.groups));
            o.string("aux_info", rng.pick(&["1048560", "32", "126"]));
        }
        Target::Item => {
            let (vault_idx, item_id) = rng.pick(&world.items);
            o.string("object_uuid", item_id);
            o.string("aux_uuid", &world.vaults[*vault_idx]);
        }
        Target::ItemShare => {
            let (vault_idx, item_id) = rng.pick(&world.items);
            o.string("object_uuid", item_id);
            o.string("aux_uuid", &world.vaults[*vault_idx]);
            // Structured data inside a string: a good test of escaping.
            o.string("aux_info", rng.pick(SHARE_INFOS));
        }
        Target::Device => {
            let user = rng.pick(&world.users);
            o.string("object_uuid", rng.pick(&user.devices));
            o.int("aux_id", rng.range(1, 60_000));
            o.string("aux_info", rng.pick(DEVICE_INFOS));
        }
        Target::Invite => {
            o.string("object_uuid", id(rng, Case::Upper));
            let (_, first) = *rng.pick(FIRST_NAMES);
            let domain = rng.pick(DOMAINS);
            o.string("aux_info", format!("{first}.new@{domain}"));
        }
        Target::Account => o.string("object_uuid", &world.account_uuid),
        Target::File => {
            o.string("object_uuid", id(rng, Case::Lower));
            o.string("aux_info", rng.pick(FILE_NAMES));
        }
        Target::Report => {
            o.string("object_uuid", id(rng, Case::Upper));
            o.string(
                "aux_info",
                rng.pick(&[
                    "Watchtower",
                    "Domain breach report",
                    "User \"activity\" report",
                ]),
            );
        }
        Target::Plain => o.string("object_uuid", id(rng, Case::Upper)),
    }
}

/// Every documented item-usage action, `other` included.
const ITEM_ACTIONS: &[&str] = &[
    "fill",
    "select-sso-provider",
    "enter-item-edit-mode",
    "export",
    "share",
    "secure-copy",
    "reveal",
    "server-create",
    "server-update",
    "server-fetch",
    "other",
];

/// A v3 beta audit event: actor, targets and context, with the insertion time the endpoint's
/// windows select on. The beta's exact schema is not published; this follows the shape the
/// beta pages describe (`target.attribute.verb` actions, actor, targets, context).
fn write_audit_v3_event(
    item: &Item<'_>,
    inserted_at: OffsetDateTime,
    rng: &mut Rng,
    out: &mut String,
) {
    let world = item.world;
    let msp = Msp::pick(rng, Stream::AuditEvents);
    let actor = rng.pick(&world.users);
    let actor_account = msp.user_account(world, rng);
    let (object_type, verb, _) = *rng.pick(AUDIT_TEMPLATES);
    let target = match object_type {
        "gm" => "group.member",
        "uva" => "vault.user-access",
        "gva" => "vault.group-access",
        "sa" => "service-account",
        "satoken" => "service-account.token",
        "ssotkn" => "sso.token",
        "mngdacc" => "managed-account",
        "dlgdsess" => "delegated-session",
        "famchild" => "family-member",
        "itemhist" => "item.history",
        "vaultkey" => "vault.key",
        "cred" => "passkey",
        other => other,
    };
    let mut o = JsonObject::new(out);
    o.string("uuid", item.uuid);
    o.string("timestamp", item.style.format(item.time));
    o.string(
        "insert_time",
        format_rfc3339(inserted_at, UtcOffset::UTC, 9),
    );
    o.string("action", format!("{target}.{verb}"));
    o.object("actor", |a| {
        a.string("type", "user");
        a.string("uuid", &actor.uuid);
        a.string("name", &actor.name);
        a.string("email", &actor.email);
        a.string("account_uuid", actor_account);
    });
    let target_uuid = id(rng, Case::Upper);
    o.key("targets");
    o.out.push('[');
    let mut t = JsonObject::new(o.out);
    t.string("type", target);
    t.string("uuid", &target_uuid);
    t.finish();
    o.out.push(']');
    let device = rng.pick(&actor.devices).clone();
    let ip = ip_address(rng);
    o.object("context", |c| {
        c.string("account_uuid", &world.account_uuid);
        c.string("device_uuid", &device);
        c.object("session", |s| {
            s.string("uuid", id(rng, Case::Upper));
            s.string("ip", &ip);
        });
        write_location(c, rng);
    });
    o.finish();
}

fn write_item_usage(item: &Item<'_>, rng: &mut Rng, out: &mut String) {
    let world = item.world;
    let msp = Msp::pick(rng, Stream::ItemUsages);
    let user = rng.pick(&world.users);
    let user_account = msp.user_account(world, rng);
    let (vault_idx, item_id) = rng.pick(&world.items);

    let mut o = JsonObject::new(out);
    o.string("uuid", item.uuid);
    o.string("timestamp", item.style.format(item.time));
    o.int("used_version", rng.range(1, 40));
    o.string("vault_uuid", &world.vaults[*vault_idx]);
    o.string("item_uuid", item_id);
    // Only clients from 1Password 8.4.0 on report an action.
    if !rng.percent(5) {
        let action = rng.pick(ITEM_ACTIONS);
        if let Some(action) = item.v1_value(action) {
            o.string("action", action);
        }
    }
    let msp = item.msp(msp);
    o.object("user", |u| write_user(u, user, msp, user_account, false));
    write_client(&mut o, rng);
    write_location(&mut o, rng);
    if msp != Msp::Absent {
        o.string("account_uuid", &world.account_uuid);
    }
    o.finish();
}

/// Sign-in categories with their weight (out of 100) and the types that go with them.
const SIGN_IN_OUTCOMES: &[(&str, u64, &[&str])] = &[
    (
        "success",
        68,
        &[
            "credentials_ok",
            "credentials_ok",
            "mfa_ok",
            "mfa_ok",
            "federated",
        ],
    ),
    (
        "credentials_failed",
        12,
        &[
            "password_secret_bad",
            "password_secret_bad",
            "platform_secret_bad",
            "platform_secret_disabled",
            "platform_secret_proxy",
        ],
    ),
    (
        "mfa_failed",
        7,
        &[
            "mfa_missing",
            "totp_disabled",
            "totp_bad",
            "totp_timeout",
            "u2f_disabled",
            "u2f_bad",
            "u2f_timeout",
            "duo_disabled",
            "duo_bad",
            "duo_timeout",
            "duo_native_bad",
            "code_disabled",
            "code_bad",
            "code_timeout",
        ],
    ),
    (
        "sso_failed",
        3,
        &[
            "service_account_sso_denied",
            "non_sso_user",
            "sso_user_mismatch",
        ],
    ),
    (
        "modern_version_failed",
        2,
        &["modern_version_missing", "modern_version_old"],
    ),
    (
        "firewall_failed",
        6,
        &[
            "ip_blocked",
            "continent_blocked",
            "country_blocked",
            "anonymous_blocked",
            "all_blocked",
        ],
    ),
    (
        "firewall_reported_success",
        2,
        &["ip_blocked", "country_blocked", "continent_blocked"],
    ),
];

fn write_sign_in_attempt(item: &Item<'_>, rng: &mut Rng, out: &mut String) {
    let world = item.world;
    let msp = Msp::pick(rng, Stream::SignInAttempts);
    let user = rng.pick(&world.users);
    let user_account = msp.user_account(world, rng);
    let mut roll = rng.below(100);
    let (category, _, types) = *SIGN_IN_OUTCOMES
        .iter()
        .find(|(_, weight, _)| {
            let hit = roll < *weight;
            roll = roll.saturating_sub(*weight);
            hit
        })
        .unwrap_or(&SIGN_IN_OUTCOMES[0]);
    let kind = rng.pick(types);
    let location = rng.pick(LOCATIONS);
    let firewall = category.starts_with("firewall");

    let mut o = JsonObject::new(out);
    o.string("uuid", item.uuid);
    o.string("session_uuid", id(rng, Case::Upper));
    o.string("timestamp", item.style.format(item.time));
    o.string("category", category);
    o.string("type", item.v1_value(kind).unwrap_or(kind));
    o.string("country", location.country_code);
    if firewall {
        let value = match *kind {
            "continent_blocked" => location.continent.to_owned(),
            "country_blocked" => location.country_code.to_owned(),
            "anonymous_blocked" => "Tor exit node".to_owned(),
            _ => ip_address(rng),
        };
        o.object("details", |d| d.string("value", &value));
    } else {
        o.null("details");
    }
    // Failed attempts for unknown accounts know only the address that was typed.
    let unknown_user = category == "credentials_failed" && rng.percent(30);
    let msp = item.msp(msp);
    o.object("target_user", |u| {
        if unknown_user {
            u.string("email", &user.email);
        } else {
            write_user(u, user, msp, user_account, false);
        }
    });
    write_client(&mut o, rng);
    if !rng.percent(10) {
        o.object("location", |l| write_location_fields(l, rng, location));
    }
    if msp != Msp::Absent {
        o.string("account_uuid", &world.account_uuid);
    }
    o.finish();
}

/// Client apps as (app_name, app_version, platform_name, platform_version, os_name, os_version).
const CLIENTS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "1Password Browser Extension",
        "81026012",
        "Chrome",
        "124.0.6367.91",
        "MacOSX",
        "10.15.7",
    ),
    (
        "1Password Browser Extension",
        "81026012",
        "Firefox",
        "125.0",
        "Windows",
        "10.0",
    ),
    (
        "1Password Browser Extension",
        "1109",
        "Chrome",
        "93.0.4577.62",
        "Android",
        "10",
    ),
    (
        "1Password Browser Extension",
        "81030010",
        "Edge",
        "124.0.2478.67",
        "Windows",
        "10.0.22631",
    ),
    (
        "1Password for Mac",
        "81024012",
        "Apple Inc.",
        "MacBookPro18,3",
        "MacOSX",
        "14.4.1",
    ),
    (
        "1Password for Windows",
        "81024012",
        "Microsoft Corporation",
        "Surface Laptop 5",
        "Windows",
        "10.0.22631",
    ),
    (
        "1Password for Linux",
        "81024012",
        "Ubuntu",
        "24.04",
        "Linux",
        "6.8.0-31-generic",
    ),
    (
        "1Password for iOS",
        "81026001",
        "Apple",
        "iPhone15,2",
        "iOS",
        "17.4.1",
    ),
    (
        "1Password for Android",
        "81026003",
        "Google",
        "Pixel 8",
        "Android",
        "14",
    ),
    (
        "1Password CLI",
        "2250001",
        "amd64",
        "go1.22.2",
        "Linux",
        "6.8.0",
    ),
    (
        "1Password SCIM Bridge",
        "2070101",
        "Go",
        "go1.22.3",
        "Linux",
        "5.15.0-1057-azure",
    ),
    (
        "1Password Extension",
        "20127",
        "Chrome",
        "<string>",
        "MacOSX",
        "10.15.6",
    ),
];

fn write_client(o: &mut JsonObject<'_>, rng: &mut Rng) {
    let (app_name, app_version, platform_name, platform_version, os_name, os_version) =
        *rng.pick(CLIENTS);
    let ip = ip_address(rng);
    o.object("client", |c| {
        c.string("app_name", app_name);
        c.string("app_version", app_version);
        c.string("platform_name", platform_name);
        c.string("platform_version", platform_version);
        c.string("os_name", os_name);
        c.string("os_version", os_version);
        c.string("ip_address", &ip);
    });
}

/// A place a client connects from.
struct Location {
    country_code: &'static str,
    /// What `location.country` says: usually the code, sometimes the name, as both occur in real data.
    country: &'static str,
    region: &'static str,
    city: &'static str,
    latitude: f64,
    longitude: f64,
    continent: &'static str,
}

const fn place(
    country_code: &'static str,
    country: &'static str,
    region: &'static str,
    city: &'static str,
    latitude: f64,
    longitude: f64,
    continent: &'static str,
) -> Location {
    Location {
        country_code,
        country,
        region,
        city,
        latitude,
        longitude,
        continent,
    }
}

const LOCATIONS: &[Location] = &[
    place(
        "CA",
        "CA",
        "Ontario",
        "Toronto",
        43.6532,
        -79.3832,
        "North America",
    ),
    place(
        "CA",
        "Canada",
        "Ontario",
        "Toronto",
        43.64,
        -79.433,
        "North America",
    ),
    place(
        "CA",
        "CA",
        "Québec",
        "Montréal",
        45.5019,
        -73.5674,
        "North America",
    ),
    place(
        "US",
        "US",
        "California",
        "San Francisco",
        37.7749,
        -122.4194,
        "North America",
    ),
    place(
        "US",
        "US",
        "New York",
        "New York",
        40.7128,
        -74.006,
        "North America",
    ),
    place("GB", "GB", "England", "London", 51.5072, -0.1276, "Europe"),
    place("DE", "DE", "Bavaria", "Munich", 48.1374, 11.5755, "Europe"),
    place(
        "FR",
        "France",
        "Île-de-France",
        "Paris",
        48.8566,
        2.3522,
        "Europe",
    ),
    place("JP", "JP", "Tokyo", "東京", 35.6764, 139.65, "Asia"),
    place(
        "BR",
        "BR",
        "São Paulo",
        "São Paulo",
        -23.5558,
        -46.6396,
        "South America",
    ),
    place("IN", "IN", "Maharashtra", "Mumbai", 19.076, 72.8777, "Asia"),
    place(
        "AU",
        "AU",
        "New South Wales",
        "Sydney",
        -33.8688,
        151.2093,
        "Oceania",
    ),
    place(
        "IL", "Israel", "Tel Aviv", "Tel Aviv", 32.0853, 34.7818, "Asia",
    ),
    place(
        "AR",
        "AR",
        "Buenos Aires",
        "Buenos Aires",
        -34.6037,
        -58.3816,
        "South America",
    ),
    place("NG", "NG", "Lagos", "Lagos", 6.5244, 3.3792, "Africa"),
];

fn write_location(o: &mut JsonObject<'_>, rng: &mut Rng) {
    // Location is omitted when the IP could not be placed.
    if rng.percent(10) {
        return;
    }
    let location = rng.pick(LOCATIONS);
    o.object("location", |l| write_location_fields(l, rng, location));
}

fn write_location_fields(o: &mut JsonObject<'_>, rng: &mut Rng, location: &Location) {
    o.string("country", location.country);
    o.string("region", location.region);
    o.string("city", location.city);
    // Coordinates are sometimes missing, and the official examples list longitude first.
    match rng.below(10) {
        0 => {}
        1 => {
            o.float("longitude", location.longitude);
            o.float("latitude", location.latitude);
        }
        _ => {
            o.float("latitude", location.latitude);
            o.float("longitude", location.longitude);
        }
    }
}

/// Public address prefixes clients connect from.
const IP_PREFIXES: &[&str] = &[
    "13.227", "89.160", "81.2", "175.16", "2.125", "216.160", "67.43", "185.199", "104.28", "41.58",
];

fn ip_address(rng: &mut Rng) -> String {
    if rng.percent(10) {
        return format!(
            "2001:db8:{:x}:{:x}::{:x}",
            rng.below(0x10000),
            rng.below(0x10000),
            rng.range(1, 0x10000)
        );
    }
    format!(
        "{}.{}.{}",
        rng.pick(IP_PREFIXES),
        rng.below(256),
        rng.range(1, 255)
    )
}

/// Names that test a forwarder's handling of text: non-ASCII, quotes, Go's HTML escaping, a
/// backslash, a decomposed accent. Each comes with the local part of the user's email.
const SPECIAL_USERS: &[(&str, &str)] = &[
    ("Zoë Ångström", "zoe.angstrom"),
    ("渡辺 健太", "k.watanabe"),
    ("Владимир Петров", "v.petrov"),
    ("محمد علي", "m.ali"),
    ("Jack \"Jackie\" O'Neill", "jackie"),
    ("Ops & Security <shared>", "ops+security"),
    ("Back\\slash Admin", "backslash"),
    ("No\u{0065}\u{0308}l Decomposed", "noel"),
    ("李小龙", "xiaolong.li"),
];

/// First names with their ASCII form for email addresses.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("Alice", "alice"),
    ("Bob", "bob"),
    ("Carlos", "carlos"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("Amélie", "amelie"),
    ("Priya", "priya"),
    ("Olusegun", "olusegun"),
    ("Siobhán", "siobhan"),
    ("Mei", "mei"),
    ("Jack", "jack"),
    ("Dana", "dana"),
    ("Björn", "bjorn"),
    ("Renée", "renee"),
];

/// Last names with their ASCII form for email addresses.
const LAST_NAMES: &[(&str, &str)] = &[
    ("Ångström", "angstrom"),
    ("O'Neill", "oneill"),
    ("Müller", "muller"),
    ("García", "garcia"),
    ("Kowalski", "kowalski"),
    ("Nakamura", "nakamura"),
    ("Smith", "smith"),
    ("Dubois", "dubois"),
    ("Østergaard", "ostergaard"),
    ("Okafor", "okafor"),
    ("Fernández-López", "fernandez-lopez"),
    ("van der Berg", "vanderberg"),
];

const DOMAINS: &[&str] = &["example.com", "acme.example", "corp.example.org"];

const DEVICE_INFOS: &[&str] = &[
    "1Password for Mac 8.10.30 on macOS 14.4.1",
    "1Password for Windows 8.10.28 on Windows 11",
    "Chrome 124 on Linux",
    "1Password for iOS 8.10.30 on iPhone \"Zoë's phone\"",
];

const SHARE_INFOS: &[&str] = &[
    "{\"expiry\":604800,\"views\":1,\"recipients\":[\"anyone with the link\"]}",
    "expires in 7 days, viewable by a.b@example.com & c.d@example.com",
    "30d",
];

const FILE_NAMES: &[&str] = &[
    "C:\\Users\\zoë\\Desktop\\export (1).csv",
    "quarterly report\t2026.pdf",
    "passport-scan.jpg",
    "ключи.txt",
];
