"""How Kubernetes state reaches the proxiers under test."""
