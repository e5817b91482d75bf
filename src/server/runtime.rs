//! Building a shard's monoio runtime: io_uring where the kernel (and seccomp) allow it, else
//! the epoll ("legacy") driver.

use std::io;

use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    Auto,
    Uring,
    Epoll,
}

impl std::str::FromStr for IoDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Self::Uring),
            "epoll" | "legacy" => Ok(Self::Epoll),
            o => Err(format!("unknown io driver `{o}` (auto, uring or epoll)")),
        }
    }
}

/// The driver a runtime actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveDriver {
    IoUring,
    Epoll,
}

impl ActiveDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Epoll => "epoll",
        }
    }
}

pub type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// io_uring submission queue size: large enough that bursts of accepts and reads on thousands
/// of connections do not stall on a full ring.
const URING_ENTRIES: u32 = 4096;

pub fn build(choice: IoDriver) -> io::Result<(Runtime, ActiveDriver)> {
    let use_uring = match choice {
        IoDriver::Epoll => false,
        IoDriver::Uring => true,
        IoDriver::Auto => monoio::utils::detect_uring(),
    };
    if use_uring {
        match build_uring() {
            Ok(rt) => return Ok((rt, ActiveDriver::IoUring)),
            Err(e) if choice == IoDriver::Uring => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; falling back to epoll");
            }
        }
    } else if choice == IoDriver::Auto {
        tracing::info!("io_uring unavailable (kernel or seccomp); using the epoll driver");
    }
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok((rt.into(), ActiveDriver::Epoll))
}

fn build_uring() -> io::Result<Runtime> {
    // A shard is the only thread that submits to its ring, and completions need not interrupt
    // it: with COOP_TASKRUN the kernel runs their task work at the next io_uring_enter instead
    // of with an inter-processor interrupt. Kernels older than 5.19 lack the flags: retry
    // without them.
    let mut tuned = io_uring::IoUring::builder();
    tuned.setup_coop_taskrun().setup_single_issuer();
    let first = RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(URING_ENTRIES)
        .uring_builder(tuned)
        .enable_timer()
        .build();
    match first {
        Ok(rt) => Ok(rt.into()),
        Err(_) => RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
            .map(Into::into),
    }
}
