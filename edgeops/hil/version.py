"""The device agent's version, which it reports in /v1/facts and /v1/identity; its own module so that the agent and
its routes (edgeops.hil.agent, edgeops.hil.agent_routes) both read it without importing each other."""

AGENT_VERSION = "0.2.0"
