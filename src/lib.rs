//! natter: live chat for a static blog, in one binary.
//!
//! How a message travels:
//!
//! ```text
//! config.toml ─► config ─► store (redb, one writer thread, group commit)
//!                            ▲            │
//! visitor WS ─► cable ─► channels ─► hub (live fan-out) ─► every socket of that visitor + every admin socket
//! admin WS  ─┘  (ActionCable     │
//!               protocol)        └► push (Web Push to the owner's devices when no admin is watching)
//! HTTP ─► routes ─► auth / conversations / assets (web/, embedded) / healthz / metrics
//! ```
//!
//! A message is committed to the store (fsync) before anyone hears of it; the hub only carries what the store already
//! holds, so a dropped socket or a crash loses nothing: the client `sync`s what it missed from the store.
//!
//! The modules, one per noun: `config` (the settings), `store` (redb behind typed methods), `hub` (who is connected),
//! `protocol` (ActionCable frames, pure), `cable` (one socket's loop), `channels` (what each action does), `routes`
//! (the one routing table), `auth` (sessions, the login), `password` (argon2 hashing, bounded), `assets` (the
//! embedded web side), `throttle` (rate limits), `metrics`, `refused_origins` (pages refused for their origin, told
//! to the operator), `error` (the one catalog of client errors), `http` (HTTP's vocabulary: the body type, JSON,
//! errors as HTTP, the admin and same-origin guards), `server` (listener and shutdown), `app` (shared state), `tls`
//! (certificates and reload), `acme` (certificates from an ACME CA such as Let's Encrypt, renewed), `init` (the
//! `--init` wizard), `invocation` (how the operator types natter from where they are), `backup` (backup, export, the
//! control socket), `email` (replies to visitors who left and news for the owner, through an SMTP relay), `dns` (the
//! one resolver, pure Rust, for push, acme and email), `allocator` (memory a burst freed, given back to the system).
//!
//! The rule: a module uses only modules on the floors below its own, never one above or beside it, so arrows run one
//! way and no two modules need each other (`scripts/import-circles` prints any circle that creeps back in):
//!
//! ```text
//! server  init                               the process: listener and shutdown; the wizard
//! backup                                     backup, export and the control socket
//! routes                                     the one routing table
//! cable                                      one socket's loop
//! channels  metrics                          handlers over the shared state
//! app                                        the shared state: one of each noun below, built once
//! acme  email                                certificates from an ACME CA, renewed, served through tls; email,
//!                                            which asks push whether the owner was told already
//! push  assets  tls                          nouns; push and assets answer their routes with the parts they need
//! http                                       HTTP's vocabulary
//! auth  hub  protocol  refused_origins       sessions, who is connected, ActionCable frames, refused pages
//! store  password                            redb behind typed methods; argon2 hashing, bounded
//! config  dns  error  throttle  timestamp    what everyone speaks; dns: names to addresses for whoever dials out
//! allocator                                  memory a burst freed, given back to the system
//! invocation                                 how to name natter in a message
//! ```

pub mod acme;
pub mod allocator;
pub mod app;
pub mod assets;
pub mod auth;
pub mod backup;
pub mod cable;
pub mod channels;
pub mod config;
pub mod dns;
pub mod email;
pub mod error;
pub mod http;
pub mod hub;
pub mod init;
pub mod invocation;
pub mod metrics;
pub mod password;
pub mod protocol;
pub mod push;
pub mod refused_origins;
pub mod routes;
pub mod server;
pub mod store;
pub mod throttle;
pub mod timestamp;
pub mod tls;
