//! Child processes that cannot outlive the test or tool that started them.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// A child process killed and reaped when dropped, also when a test fails halfway: a
/// server, sender or helper left running would hold its ports and skew later tests and
/// benchmarks. Derefs to the [`Child`].
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Deref for Reaped {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // Best effort: the process may have exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
