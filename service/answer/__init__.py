"""What makes one answer: the chat turn (chat), the router that picks rag, persona or both (router, router_fit),
the answerers (rag, persona) and the service's view of the knowledge base (retrieval)."""
