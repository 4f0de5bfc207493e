"""The manager's view of the nodes: registry documents and engine state turned into NodeStates."""
