//! The Redis store's Lua scripts, each with a clock prelude (`lua/clock/`: Redis's `TIME`, or the
//! caller's clock for a store on a test's manual clock) and the shared prelude (`lua/prelude.lua`)
//! in front. Scripts are sent by SHA (`EVALSHA`), loaded on first use.

use redis::Script;

/// The store's scripts, each with a clock (`lua/clock/`) and the shared prelude (`lua/prelude.lua`)
/// in front.
pub(super) struct Scripts {
    pub(super) lookup: Script,
    pub(super) sessions: Script,
    pub(super) touch: Script,
    pub(super) bind: Script,
    pub(super) due: Script,
    pub(super) claim: Script,
    pub(super) admin: Script,
    pub(super) backend: Script,
    pub(super) dead: Script,
    pub(super) replay: Script,
    pub(super) publish: Script,
}

/// A script on Redis's clock (`clock/server.lua`), or, with `$given`, on the clock the caller passes
/// as the last argument (`clock/given.lua`).
macro_rules! script {
    ($given:expr, $file:literal) => {
        Script::new(if $given {
            concat!(
                include_str!("../lua/clock/given.lua"),
                include_str!("../lua/prelude.lua"),
                include_str!(concat!("../lua/", $file))
            )
        } else {
            concat!(
                include_str!("../lua/clock/server.lua"),
                include_str!("../lua/prelude.lua"),
                include_str!(concat!("../lua/", $file))
            )
        })
    };
}

impl Scripts {
    /// The scripts; `given_clock`: on the clock [`RedisStore::eval`] passes, not Redis's.
    pub(super) fn new(given_clock: bool) -> Self {
        Self {
            lookup: script!(given_clock, "lookup.lua"),
            sessions: script!(given_clock, "sessions.lua"),
            touch: script!(given_clock, "touch.lua"),
            bind: script!(given_clock, "bind.lua"),
            due: script!(given_clock, "due.lua"),
            claim: script!(given_clock, "claim.lua"),
            admin: script!(given_clock, "admin.lua"),
            backend: script!(given_clock, "backend.lua"),
            dead: script!(given_clock, "dead.lua"),
            replay: script!(given_clock, "replay.lua"),
            publish: script!(given_clock, "publish.lua"),
        }
    }
}
