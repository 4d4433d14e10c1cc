"""One process-wide lock for every call into PDFium.

PDFium is not thread-safe, not even across different documents: two threads parsing two PDFs at
once crash the process (a segfault or a heap "double free"). The builder app and the deploy server
ingest from several threads, so every use of pypdfium2 holds this lock from opening a document
to closing it. Parsing stays parallel across processes (each ingest job is one).
"""
import threading

PDFIUM_LOCK = threading.RLock()
