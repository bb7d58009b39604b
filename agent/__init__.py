"""The voice agent: prompt building, first sentence, in-call tools."""
