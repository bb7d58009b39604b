"""Activities and provider adapters (simulated, LiveKit, OpenAI)."""
