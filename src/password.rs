//! argon2id password hashing that a burst of logins cannot turn into a memory bomb.
//!
//! One argon2id computation with the OWASP baseline parameters (argon2's defaults: 19 MiB, 2 passes, 1 lane) fills
//! 19 MiB. Two things made a login burst cost natter a gigabyte: every login ran its own computation on the blocking
//! pool with no bound, and glibc kept the freed blocks. glibc serves a large allocation with its own `mmap` and gives
//! it back at `free`, but then raises its mmap threshold to that size (up to 32 MiB), so from the second login on the
//! 19 MiB came from the heap of whichever thread ran it, and stayed there: 20 MB after one login, 80 after four, a
//! gigabyte with sixty at once.
//!
//! So here at most one computation runs at a time (`Gate`), a few more may wait, and the rest are told to come back.
//! And each computation's memory is reserved as more than 32 MiB, of which argon2 touches only what it needs: a
//! request that large is always its own mapping in glibc (above the highest threshold it ever moves to), so it is
//! returned to the system when the hash is done and never moves the threshold. Only the touched pages are ever
//! resident. Other allocators get a larger reservation of the same resident size.

use std::sync::Arc;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Semaphore, TryAcquireError};

/// The memory reserved for one computation, in argon2 blocks of 1 KiB: above glibc's largest mmap threshold (32 MiB
/// on 64-bit systems), so the reservation is its own mapping whatever the threshold is at the time.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// Computations that run at once. One at a time is a few hundredths of a second per login on a small machine;
/// logins are rare, and a second would double the peak memory for no one's benefit.
const RUNNING: usize = 1;

/// Logins that may wait for their turn beyond the running ones; more are answered "busy, retry" at once, so a burst
/// holds neither memory nor connections.
const WAITING: usize = 8;

/// Hashes a password with argon2id and a random salt (argon2's defaults: 19 MiB, 2 passes, the OWASP baseline).
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    let params = Params::default();
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_bytes = [0u8; 16];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).expect("our own salt");
    with_memory(&params, |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut output, memory)
    })
    .expect("argon2 hashes any password of bounded length");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().expect("the default parameters encode"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).expect("32 bytes are a valid output")),
    }
    .to_string()
}

/// Whether `password` matches a PHC hash string, computed with the parameters that string carries (so hashes made
/// with other parameters, by `natter --init` or another tool, keep working).
pub fn verify(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let (Ok(version), Ok(params)) = (version, Params::try_from(&parsed)) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut output = vec![0u8; expected.len()];
    let computed = with_memory(&params, |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut output, memory)
    });
    // `Output`'s equality is constant-time.
    computed.is_ok() && Output::new(&output).is_ok_and(|output| output == expected)
}

/// Runs `compute` with argon2's working memory, reserved so that it goes back to the system afterwards (see the
/// module's comment).
fn with_memory<T>(params: &Params, compute: impl FnOnce(&mut [Block]) -> T) -> T {
    let blocks = params.block_count();
    let mut memory: Vec<Block> = Vec::with_capacity(blocks.max(RESERVED_BLOCKS));
    memory.resize(blocks, Block::default());
    compute(&mut memory)
}

/// Bounds the argon2 computations in flight: `RUNNING` at once, `WAITING` more in line.
pub struct Gate {
    running: Arc<Semaphore>,
    admitted: Semaphore,
}

/// The gate is full: the caller answers 503 with `Retry-After`.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(RUNNING, WAITING)
    }
}

impl Gate {
    pub fn new(running: usize, waiting: usize) -> Gate {
        Gate {
            running: Arc::new(Semaphore::new(running)),
            admitted: Semaphore::new(running + waiting),
        }
    }

    /// Runs `work` on the blocking pool when its turn comes, or answers `Busy` at once when the line is full. The
    /// turn is held by the blocking task itself, so a caller that goes away (a closed connection) does not let
    /// another computation start while its own still runs.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _admitted = match self.admitted.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => return Err(Busy),
        };
        let turn = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await
        .map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash("correct horse");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify(&hash, "correct horse"));
        assert!(!verify(&hash, "wrong"));
        assert!(!verify("garbage", "x"));
    }

    #[test]
    fn hashes_made_elsewhere_with_other_parameters_verify() {
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(b"sixteen bytes!!!").unwrap();
        let params = Params::new(8 * 1024, 3, 1, Some(24)).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify(&other, "pw"));
        assert!(!verify(&other, "pW"));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x10, Params::default())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify(&argon2i, "pw"));
    }

    /// Regression (issue 15, item 1): a burst of logins ran one argon2 computation each, all at once.
    #[test]
    fn the_gate_runs_one_at_a_time_and_turns_away_what_does_not_fit_in_line() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let gate = Arc::new(Gate::new(1, 2));
            let (release, released) = std::sync::mpsc::channel::<()>();
            let released = Arc::new(std::sync::Mutex::new(released));
            let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut admitted = Vec::new();
            for _ in 0..3 {
                let (gate, released, running, most) = (
                    gate.clone(),
                    released.clone(),
                    running.clone(),
                    most.clone(),
                );
                admitted.push(tokio::spawn(async move {
                    gate.run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        released.lock().unwrap().recv().unwrap();
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
                }));
            }
            // Wait until all three are in (one running, two in line), then the fourth is turned away.
            while gate.admitted.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
            assert_eq!(gate.run(|| ()).await, Err(Busy));
            for _ in 0..3 {
                release.send(()).unwrap();
            }
            for task in admitted {
                assert_eq!(task.await.unwrap(), Ok(()));
            }
            assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
            assert_eq!(gate.run(|| 7).await, Ok(7), "the line is free again");
        });
    }
}
