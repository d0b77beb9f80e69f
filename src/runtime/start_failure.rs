//! Why a task failed to start, said the way a user acts on it, and which
//! failures starting the task again on the same node cannot mend.
//!
//! Docker's own messages put the cause last, after an endpoint name and a
//! 64-digit hash ("driver failed programming external connectivity on
//! endpoint ... (...): Error starting userland proxy: listen tcp4
//! 0.0.0.0:8080: bind: address already in use"); the reasons built here
//! start with it.

use crate::manifest::task_definition::Protocol;

/// What the reason of an image that could not be had starts with (the
/// ECS error name, which ECS users search for).
pub const IMAGE: &str = "CannotPullContainerError: ";
/// What sits in the reason of a host port another process holds.
const PORT_IN_USE: &str = " is already in use on node ";

/// The reason for an image the engine does not have and could not pull.
pub fn image_unavailable(image: &str, detail: &str) -> String {
    format!(
        "{IMAGE}image `{image}` is not on this node and could not be pulled: {}",
        engine_detail(detail)
    )
}

/// The reason for a static host port of the task that something else
/// holds, when `message` (the engine's) says so.
pub fn port_in_use(message: &str, node: &str, ports: &[(u16, Protocol)]) -> Option<String> {
    if !super::ports::is_port_conflict(message) {
        return None;
    }
    let port = conflicting_port(message)?;
    let (_, protocol) = ports.iter().find(|(p, _)| *p == port)?;
    let protocol = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    Some(format!(
        "host port {port}/{protocol}{PORT_IN_USE}`{node}` (by a process or container that is \
         not this task's; free it or change hostPort): {}",
        engine_detail(message)
    ))
}

/// Whether a failure, as reported (a start error or a stopped task's
/// reason), happens again however often the task is started on the same
/// node until someone acts: an image that cannot be had, a host port held
/// by something else.
pub fn lasting(reason: &str) -> bool {
    reason.contains(IMAGE) || (reason.contains("host port ") && reason.contains(PORT_IN_USE))
}

/// The host port an engine's conflict message names: the number after
/// the last `:` of its `ADDRESS:PORT` word.
fn conflicting_port(message: &str) -> Option<u16> {
    message
        .split(|c: char| c.is_whitespace())
        .filter(|w| w.contains("0.0.0.0:") || w.contains("]:") || w.matches(':').count() == 2)
        .filter_map(|w| {
            let w = w.trim_end_matches(':');
            w.rsplit(':').next()?.parse::<u16>().ok()
        })
        .next()
}

/// An engine message without the wrapping that says nothing to a user:
/// the HTTP status and the endpoint's name and hash.
pub fn engine_detail(message: &str) -> String {
    let m = message.trim();
    let m = match m.find("Docker responded with status code ") {
        Some(i) => m[i..].split_once(": ").map_or(m, |(_, rest)| rest),
        None => m,
    };
    // "... on endpoint NAME (HASH): cause" -> "cause"
    let m = match m.find("driver failed programming external connectivity") {
        Some(i) => m[i..].split_once("): ").map_or(m, |(_, rest)| rest),
        None => m,
    };
    m.strip_prefix("Error starting userland proxy: ")
        .unwrap_or(m)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERLAND: &str = "Docker responded with status code 500: driver failed programming \
        external connectivity on endpoint reconcile-u5-web-073c1b6805f3-web \
        (4366c7f47ba41aa6d5d104e810d39c6c67cce8d89f4ab8388d619bebe61da295): Error starting \
        userland proxy: listen tcp4 0.0.0.0:18080: bind: address already in use";

    #[test]
    fn a_taken_static_port_is_named_first() {
        let r = port_in_use(USERLAND, "local", &[(18080, Protocol::Tcp)]).unwrap();
        assert!(
            r.starts_with("host port 18080/tcp is already in use on node `local`"),
            "{r}"
        );
        assert!(
            r.ends_with(": listen tcp4 0.0.0.0:18080: bind: address already in use"),
            "{r}"
        );
        assert!(!r.contains("4366c7f4"), "{r}");
        assert!(lasting(&r));
        let allocated = "Bind for 0.0.0.0:8080 failed: port is already allocated";
        let r = port_in_use(allocated, "n1", &[(8080, Protocol::Tcp)]).unwrap();
        assert!(r.starts_with("host port 8080/tcp is already in use"), "{r}");
        let v6 = "listen udp6 [::]:5353: bind: address already in use";
        let r = port_in_use(v6, "n1", &[(5353, Protocol::Udp)]).unwrap();
        assert!(r.starts_with("host port 5353/udp"), "{r}");
    }

    #[test]
    fn a_dynamic_port_or_another_error_is_not_a_taken_static_port() {
        // The port is not one the task asked for: a dynamic one, which a
        // retry on fresh ports mends.
        assert_eq!(port_in_use(USERLAND, "local", &[(80, Protocol::Tcp)]), None);
        assert_eq!(port_in_use(USERLAND, "local", &[]), None);
        assert_eq!(
            port_in_use("no such image", "local", &[(80, Protocol::Tcp)]),
            None
        );
    }

    #[test]
    fn images_that_cannot_be_had_last_and_other_failures_do_not() {
        let r = image_unavailable(
            "nosuch/image:1",
            "Docker responded with status code 500: Get \"https://registry.example/v2/\": dial tcp: no such host",
        );
        assert_eq!(
            r,
            "CannotPullContainerError: image `nosuch/image:1` is not on this node and could not \
             be pulled: Get \"https://registry.example/v2/\": dial tcp: no such host"
        );
        assert!(lasting(&format!("task 1234 failed to start: {r}")));
        assert!(!lasting(
            "task 1234 stopped: EssentialContainerExited: exit code 1"
        ));
        assert!(!lasting("secret `db` cannot be read"));
    }
}
