//! The `test:///default` tier's fixture: a project directory with a
//! kvmdrive.yml using a tiny box, its own box store and pool directory, and
//! a connection to libvirt's test driver, whose state every connection of
//! the process shares (tests that change it take [`LIBVIRT`]).

use std::path::PathBuf;
use std::sync::Mutex;

use kvmdrive::boxes::BoxStore;
use kvmdrive::machine::lifecycle::Env;
use kvmdrive::machine::plan;
use kvmdrive::machine::project::Project;
use kvmdrive::output::Reporter;
use kvmdrive::project::config::Config;
use kvmdrive::virt::hypervisor::DomainState;
use kvmdrive::virt::storage::POOL_NAME;
use kvmdrive::virt::Hypervisor;

/// The test driver's state is shared by every connection of the process.
pub static LIBVIRT: Mutex<()> = Mutex::new(());

pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub pool_dir: PathBuf,
    pub the_box: PathBuf,
    pub hv: Hypervisor,
    pub store: BoxStore,
    pub out: Reporter,
}

/// A project in `tmp/project` with the given machines.
pub fn fixture(machines: &[&str]) -> Fixture {
    fixture_at("project", machines)
}

/// A project at `tmp/<rel>` with the given machines (none: no kvmdrive.yml
/// yet, see [`Fixture::write`]).
pub fn fixture_at(rel: &str, machines: &[&str]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    let fx = Fixture {
        the_box: super::tiny_box(tmp.path()),
        pool_dir: tmp.path().join("pool"),
        hv: Hypervisor::connect("test:///default").unwrap(),
        // Not `from_env`: tests run in parallel threads, and a process-wide
        // KVMDRIVE_HOME let one test's store land in another's temp dir.
        store: BoxStore::new(tmp.path().join("home")),
        out: Reporter::new(false, 0),
        dir,
        _tmp: tmp,
    };
    if !machines.is_empty() {
        let list: String = machines
            .iter()
            .map(|m| format!("  - name: {m}\n"))
            .collect();
        fx.write(&list);
    }
    fx
}

impl Fixture {
    /// Writes kvmdrive.yml: `machines` is the YAML of the machine list.
    pub fn write(&self, machines: &str) {
        let yml = format!(
            "defaults:\n  box: {}\n  accel: tcg\nmachines:\n{machines}",
            self.the_box.display()
        );
        std::fs::write(self.dir.join("kvmdrive.yml"), yml).unwrap();
    }

    pub fn project(&self) -> Project {
        Project::new(&self.dir, None).unwrap()
    }

    pub fn config(&self) -> Config {
        Config::load(&self.dir).unwrap()
    }

    /// Runs `f` with this fixture's environment and kvmdrive.yml as it is now.
    pub fn run<T>(&self, f: impl FnOnce(&Env, &Config) -> T) -> T {
        self.run_with(&self.config(), f)
    }

    /// Runs `f` with this fixture's environment and `config`.
    pub fn run_with<T>(&self, config: &Config, f: impl FnOnce(&Env, &Config) -> T) -> T {
        let project = self.project();
        let env = Env {
            hv: &self.hv,
            project: &project,
            out: &self.out,
            store: &self.store,
            pool_dir: self.pool_dir.clone(),
        };
        f(&env, config)
    }

    pub fn domain(&self, machine: &str) -> String {
        plan::domain_name(&self.project(), machine)
    }

    pub fn state(&self, machine: &str) -> Option<DomainState> {
        self.hv.domain_state(&self.domain(machine)).unwrap()
    }

    pub fn overlay_exists(&self, machine: &str) -> bool {
        self.hv
            .volume_names(POOL_NAME)
            .unwrap()
            .contains(&plan::overlay_name(&self.domain(machine)))
    }
}

/// Machine names as the lifecycle functions take them.
pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
