"""Retrieval for opclaim: MiniLM note embeddings, a FAISS flat-L2 index of training notes with
their claims, nearest-claim lookup for RAG prompts, and the retrieval-only kNN baseline.

    from rag.index import build_index      # cases -> index folder
    from rag.retrieve import Retriever     # index folder -> nearest claims
    from rag.knn import predict            # the kNN baseline
"""
