//! Frees what reloads and DNS refreshes replaced (the old snapshot) on a thread of its own,
//! once no core holds it: a core whose requests outlive a reload would otherwise free the old
//! config itself between two requests (~1 ms for 10,000 routes that all changed).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

/// How soon a retired value is looked at again while someone else still holds it.
const RECHECK: Duration = Duration::from_millis(100);

/// Where replaced values go. Dropping it ends the thread, which frees what it held.
pub struct Retired<T: Send + Sync + 'static> {
    to: Option<Sender<Arc<T>>>,
}

impl<T: Send + Sync + 'static> Retired<T> {
    pub fn start() -> Retired<T> {
        let (to, from) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("coregate-retire".into())
            .spawn(move || hold(from));
        // Without the thread, a replaced value is freed where its last holder drops it.
        Retired {
            to: spawned.ok().map(|_| to),
        }
    }

    /// Hands over a value no longer published; it is freed on the retiring thread once the
    /// other holders (requests still running on the cores) have let go.
    pub fn retire(&self, value: Arc<T>) {
        if let Some(to) = &self.to {
            let _ = to.send(value);
        }
    }
}

fn hold<T>(from: Receiver<Arc<T>>) {
    let mut held: Vec<Arc<T>> = Vec::new();
    loop {
        let next = match held.is_empty() {
            true => from.recv().map_err(|_| RecvTimeoutError::Disconnected),
            false => from.recv_timeout(RECHECK),
        };
        match next {
            Ok(value) => held.push(value),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Held here alone: nobody can take another reference, so it is freed here.
        held.retain(|v| Arc::strong_count(v) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Records the name of the thread that drops it.
    struct Noted(Arc<Mutex<Option<String>>>);

    impl Drop for Noted {
        fn drop(&mut self) {
            let name = thread::current().name().map(str::to_owned);
            *self.0.lock().unwrap() = Some(name.unwrap_or_default());
        }
    }

    /// A retired value another holder still has lives until that holder lets go, and is then
    /// freed on the retiring thread, not the holder's.
    #[test]
    fn the_last_holder_only_lets_go_and_the_retiring_thread_frees() {
        let retired = Retired::start();
        let dropped_on = Arc::new(Mutex::new(None));
        let value = Arc::new(Noted(dropped_on.clone()));
        let holder = value.clone();
        retired.retire(value);
        // Several rechecks pass while the holder has it.
        thread::sleep(RECHECK * 3);
        assert_eq!(*dropped_on.lock().unwrap(), None, "freed while held");
        let worker = thread::Builder::new()
            .name("core".into())
            .spawn(move || drop(holder))
            .unwrap();
        worker.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while dropped_on.lock().unwrap().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            dropped_on.lock().unwrap().as_deref(),
            Some("coregate-retire")
        );
    }
}
