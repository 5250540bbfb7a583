//! Extra networks against libvirt's `test:///default` driver: private
//! networks shared by machines, made on `up`, their DHCP reservations, kept
//! while a machine uses them and removed with the last one (also when it left
//! the config); bad public devices and overlapping subnets refused before
//! anything is made.

mod common;

use common::driver::{fixture_at, Fixture, LIBVIRT};

use kvmdrive::machine::lifecycle;
use kvmdrive::machine::{netplan, nics, plan};

/// The XML of the project's private network `key`, if it exists.
fn net(fx: &Fixture, key: &str) -> Option<String> {
    fx.hv
        .network_xml(&nics::private_network_name(&fx.project(), key))
        .unwrap()
}

const A: &str = "  - name: a
    networks:
      - {type: private, ip: 192.168.56.11}
      - {type: private, dhcp: true, name: backend, nic_model: e1000}
";
const B: &str = "  - name: b
    networks:
      - {type: private, ip: 192.168.56.12}
      - {type: private, dhcp: true, name: backend}
";

#[test]
fn private_networks_are_shared_reserved_and_removed_with_their_last_user() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at("project", &[]);
    fx.write(&format!("{A}{B}"));
    let records = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();

    // One libvirt network per private network, isolated, on the given subnet.
    let static_net = net(&fx, "192.168.56.0-24").expect("static network made");
    assert!(!static_net.contains("<forward"), "{static_net}");
    assert!(static_net.contains("192.168.56.1"), "{static_net}");
    let backend = net(&fx, "backend").expect("dhcp network made");
    let hosts = netplan::read_network(&backend).hosts;
    assert_eq!(hosts.len(), 2, "{backend}");
    assert!(backend.contains("<range"), "{backend}");

    // Each machine records its extra addresses; the DHCP one is reserved.
    let a = &records[0];
    assert_eq!(a.networks.len(), 2);
    assert_eq!(a.networks[0].ip.unwrap().to_string(), "192.168.56.11");
    let reserved = a.networks[1].ip.unwrap();
    assert!(hosts
        .iter()
        .any(|h| h.ip == reserved && h.mac == a.networks[1].mac));

    // The domain: management NIC first, then the extra NICs in order.
    let xml = fx
        .hv
        .domain_xml(&plan::domain_name(&fx.project(), "a"))
        .unwrap()
        .unwrap();
    let order: Vec<usize> = [
        format!("network='{}'", plan::network_name(&fx.project())),
        format!(
            "network='{}'",
            nics::private_network_name(&fx.project(), "192.168.56.0-24")
        ),
        format!(
            "network='{}'",
            nics::private_network_name(&fx.project(), "backend")
        ),
    ]
    .iter()
    .map(|s| {
        xml.find(s.as_str())
            .unwrap_or_else(|| panic!("{s} in {xml}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{xml}");
    assert!(xml.contains("e1000"), "{xml}");

    // A second up changes nothing.
    let again = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    assert_eq!(again[0].networks, records[0].networks);

    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert!(net(&fx, "backend").is_none() && net(&fx, "192.168.56.0-24").is_none());
}

#[test]
fn a_network_outlives_one_of_its_machines() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at("project", &[]);
    fx.write(&format!("{A}{B}"));
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    fx.run(|env, c| lifecycle::destroy(env, c, &["b".to_string()]))
        .unwrap();
    let backend = net(&fx, "backend").expect("a still uses backend");
    let hosts = netplan::read_network(&backend).hosts;
    assert_eq!(hosts.len(), 1, "b's reservation is gone: {backend}");
    assert_eq!(hosts[0].name, "a");
    assert!(net(&fx, "192.168.56.0-24").is_some());

    // A machine removed from the config is still found and its networks go.
    fx.write("  - name: c\n");
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert!(net(&fx, "backend").is_none() && net(&fx, "192.168.56.0-24").is_none());
    assert!(!fx
        .hv
        .network_exists(&plan::network_name(&fx.project()))
        .unwrap());
}

#[test]
fn bad_networks_are_refused_before_anything_is_made() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at("project", &[]);
    for (machines, want) in [
        (
            "  - name: a\n    networks: [{type: public, dev: kvd-nosuchdev}]\n",
            "`kvd-nosuchdev` does not exist",
        ),
        (
            "  - name: a\n    networks: [{type: private, ip: 192.168.56.11, name: x}]\n  - name: b\n    networks: [{type: private, ip: 192.168.57.11, name: x}]\n",
            "disagree on its subnet",
        ),
        (
            // The test driver's own `default` network is 192.168.122.0/24.
            "  - name: a\n    networks: [{type: private, ip: 192.168.122.50}]\n",
            "overlaps libvirt network default",
        ),
        (
            "  - name: a\n    forwarded_ports: [{guest: 80, host: 18181}]\n  - name: b\n    forwarded_ports: [{guest: 81, host: 18181, host_ip: 0.0.0.0}]\n",
            "`a` forwards the same host port",
        ),
    ] {
        fx.write(machines);
        let e = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap_err();
        assert!(e.to_string().contains(want), "{machines}: {e}");
        assert!(e.hint().is_some());
        assert!(fx
            .hv
            .domain_state(&plan::domain_name(&fx.project(), "a"))
            .unwrap()
            .is_none());
        assert!(!fx.project().state_dir.exists(), "{machines}");
        assert!(!fx.hv.network_exists(&plan::network_name(&fx.project())).unwrap());
    }
}
