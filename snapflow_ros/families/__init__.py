"""Policy families: each implements snapflow_ros.policy.contract.FlowPolicy."""
