"""Every registry key shoal itself uses, named once (nothing else spells a key).

    shoal/nodes/<node>/facts       the agent's facts: {"node", "gathered_at", "facts", "failed_sources"}
    shoal/nodes/<node>/info        address, engine, CPUs, memory, labels, pool
    shoal/nodes/<node>/agent       the agent's claim on its node name (a Consul lock)
    shoal/nodes/<node>/data        the node's data report (refused records, conflicts, failing steps)
    shoal/datasets/<id>            a dataset or snapshot record (the cluster's view; the node's pool holds
                                   the truth, and rebuilds this record if it is lost)
    shoal/dataset-names/<name>     the dataset id holding that name (claimed with cas=0)
    shoal/mounts/<node>/<id>       the mount ids (Docker's caller IDs) holding a dataset on a node
    shoal/deletions/<id>           an explicit, durable request to delete a dataset (the only thing that
                                   ever makes a node delete data)
    shoal/decisions/<container>    the placement decision behind a container
    shoal/join-tokens/<id>         a join token: the hash of its secret and when it expires (never the secret)
    shoal/identities/<node>        the node certificate a node joined with (its fingerprint), so a second
                                   agent cannot take a node's name without that node's credentials
    shoal/nodes/<node>/transfer    where the node's agent serves dataset streams: {"address": "ip:port"}
    shoal/moves/<id>               a dataset move under way (phase copy|final|fenced), created with cas=0 so
                                   a dataset has at most one; the fence changes it and the dataset record
                                   in one transaction (shoal.data.moves)
    shoal/replicas/<id>            the nodes the manager chose to keep read-only replicas of a dataset
    shoal/replica-status/<id>/<node>  what that replica last received (snapshot, when taken, bytes)
    shoal/replica-status/<id>/<node>/receiving  a pull of it under way on that node (bytes, rate)
    shoal/reschedule/<swarm id>    a container with a reschedule policy: its name, create body and node,
                                   so it can be created again elsewhere when its node is lost
    shoal/drain/<node>             the node is draining: no new placements, its containers move away
    shoal/move-starts/<node>/<container id>  a container a move (or its undo) left stopped because its start
                                   failed (the node's volume plugin away, say): the leader starts it again
    shoal/reservations/<node>      placements held by managers sharing the registry (shoal.cluster.holds)
    shoal/decision-log/<kind>/<ms>-<id>  a move, promotion, replica assignment, reschedule or drain as a
                                   decision with its reasons (shoal.manager.decisions; <ms> zero-padded,
                                   so a kind's keys sort oldest first; the newest 50 of each kind kept)
    shoal/acl/tokens/<accessor>    the registry's own ACL state (shoal.registry.acl_http): each token,
    shoal/acl/secrets/<sha256>     the accessor a secret's digest finds, each policy by id and its name's
    shoal/acl/policies/<id>        claim, and the bootstrap marker; written only through /v1/acl/*, and
    shoal/acl/policy-names/<name>  with ACLs on no /v1/kv or /v1/txn request sees or changes them
    shoal/acl/bootstrap

and in the catalog, the service and check `shoal-agent` per node (a TTL check each publish renews).
"""

from __future__ import annotations

ROOT = "shoal/"
NODES = "shoal/nodes/"
DATASETS = "shoal/datasets/"
DATASET_NAMES = "shoal/dataset-names/"
MOUNTS = "shoal/mounts/"
DELETIONS = "shoal/deletions/"
DECISIONS = "shoal/decisions/"
JOIN_TOKENS = "shoal/join-tokens/"
IDENTITIES = "shoal/identities/"
MOVES = "shoal/moves/"
REPLICAS = "shoal/replicas/"
REPLICA_STATUS = "shoal/replica-status/"
RESCHEDULE = "shoal/reschedule/"
DRAIN = "shoal/drain/"
DECISION_LOG = "shoal/decision-log/"
MOVE_STARTS = "shoal/move-starts/"
HOLDS = "shoal/reservations/"  # node -> placements held by managers sharing the registry (cluster/holds.py)
ACL = "shoal/acl/"
ACL_TOKENS = ACL + "tokens/"
ACL_SECRETS = ACL + "secrets/"
ACL_POLICIES = ACL + "policies/"
ACL_POLICY_NAMES = ACL + "policy-names/"
ACL_BOOTSTRAP = ACL + "bootstrap"
AGENT_SERVICE = "shoal-agent"  # the catalog service and check every agent keeps alive

NODE_DOCS = ("facts", "info")


def node_prefix(node: str) -> str:
    """Every key of one node's own (what its node token may write)."""
    return f"{NODES}{node}/"


def node_facts(node: str) -> str:
    return f"{NODES}{node}/facts"


def node_info(node: str) -> str:
    return f"{NODES}{node}/info"


def node_claim(node: str) -> str:
    return f"{NODES}{node}/agent"


def node_data(node: str) -> str:
    return f"{NODES}{node}/data"


def node_transfer(node: str) -> str:
    return f"{NODES}{node}/transfer"


def split_node_key(key: str) -> tuple[str, str]:
    """`shoal/nodes/node1/facts` -> ("node1", "facts"); ("", "") for a key outside the node layout."""
    if not key.startswith(NODES):
        return "", ""
    node, _, kind = key.removeprefix(NODES).partition("/")
    return node, kind


def dataset(dataset_id: str) -> str:
    return f"{DATASETS}{dataset_id}"


def dataset_name(name: str) -> str:
    return f"{DATASET_NAMES}{name}"


def node_mounts(node: str) -> str:
    return f"{MOUNTS}{node}/"


def mounts(node: str, dataset_id: str) -> str:
    return f"{MOUNTS}{node}/{dataset_id}"


def deletion(dataset_id: str) -> str:
    return f"{DELETIONS}{dataset_id}"


def decision(container_id: str) -> str:
    return f"{DECISIONS}{container_id}"


def join_token(token_id: str) -> str:
    return f"{JOIN_TOKENS}{token_id}"


def identity(node: str) -> str:
    return f"{IDENTITIES}{node}"


def move(dataset_id: str) -> str:
    return f"{MOVES}{dataset_id}"


def replicas(dataset_id: str) -> str:
    return f"{REPLICAS}{dataset_id}"


def replica_status(dataset_id: str, node: str = "") -> str:
    """One replica's status, or (node "") the prefix of every replica status of the dataset."""
    return f"{REPLICA_STATUS}{dataset_id}/{node}"


def receiving(dataset_id: str, node: str) -> str:
    """The pull of `dataset_id` under way on `node` (a move's target or a replica), as its receiver says."""
    return f"{REPLICA_STATUS}{dataset_id}/{node}/receiving"


def reschedule(swarm_id: str) -> str:
    return f"{RESCHEDULE}{swarm_id}"


def hold(node: str) -> str:
    return HOLDS + node


def drain(node: str) -> str:
    return f"{DRAIN}{node}"


def last_part(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def decision_log(kind: str, at: float = -1.0, record_id: str = "") -> str:
    """One logged decision, or (no time) the prefix of every logged decision of `kind`."""
    if at < 0:
        return f"{DECISION_LOG}{kind}/"
    return f"{DECISION_LOG}{kind}/{int(at * 1000):015d}-{record_id}"


def move_start(node: str, container_id: str) -> str:
    return f"{MOVE_STARTS}{node}/{container_id}"
