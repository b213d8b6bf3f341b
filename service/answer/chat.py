"""One chat turn: route the conversation, retrieve, build the prompt, hand back a reply to complete or stream.

The HTTP API and the Gradio page both call `ChatService.reply`; there is no second code path.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.embedding import get_embedder
from ingest.retrieval import Filters, RetrievedChunk

from ..engines import Completion, Delta, Engine, Message, SamplingParams, text_turns
from ..errors import BadRequest, EngineUnavailable, NotFound, UpstreamError
from ..protocol import Citation, KongmingOptions, ModelCard, Route, RouteInfo
from ..registry import ServedModels, default_max_tokens, fine_tuned_messages
from ..settings import PersonaConfig, ServiceSettings
from .extractive import decline_message, extractive_answer, lexicon_of, relevant
from .persona import Engines, persona_messages, persona_params
from .rag import (
    Tokenizer,
    cut_answer,
    grounded_persona_messages,
    next_after,
    no_answer,
    question_part,
    rag_messages,
    retrieval_query,
    shown,
    token_counter,
)
from .retrieval import KnowledgeBase, citations
from .router import DEFAULT_MODEL, RouteDecision, Router, RouterModel, Signals
from .sources import Language, complete_with_sources, footer, language_of, stream_with_sources
from .structured import json_completion, json_object_wanted, json_stream

log = logging.getLogger(__name__)
ROUTED = "kongming"
RAG_MODEL = "kongming-rag"
PERSONA_PREFIX = "kongming-persona-"
STREAM_PIECE = 12  # characters per streamed piece of an extractive answer


def last_reply(history: Sequence[Message]) -> str:
    """The conversation's last assistant text ("" when none, or when it is not text)."""
    said = next((m["content"] for m in reversed(history) if m["role"] == "assistant"), "")
    return said if isinstance(said, str) else ""


@dataclass
class Reply:
    """A prepared answer: route, citations, and either ready text (extractive) or an engine call to make."""

    decision: RouteDecision
    citations: list[Citation]
    model: str
    text: str | None = None
    engine: Engine | None = None
    messages: list[Message] = field(default_factory=list)
    params: SamplingParams = field(default_factory=SamplingParams)
    note: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # the answer when the engine fails before its first token (a RAG answer: the extractive one), built only then
    fallback: Callable[[], Reply] | None = None
    # kongming.sources "append": the numbered sources follow the text, in the question's language (sources.py)
    append_sources: Language | None = None
    # a ready text's finish_reason and (prompt, completion) tokens: ChatService._finish_text cut and counted it
    finish_reason: str = "stop"
    usage: tuple[int, int] = (0, 0)
    json_object: bool = False  # response_format json_object from an answerer without it: wrapped (structured.py)

    @property
    def route_info(self) -> RouteInfo:
        d = self.decision
        return RouteInfo(route=d.route, forced=d.forced, persona=d.persona, scores=d.scores, reason=d.reason)

    async def complete(self) -> Completion:
        done = await self._complete()
        done = complete_with_sources(done, self.sources_footer()) if self.append_sources else done
        return json_completion(done, self.citations) if self.json_object else done

    def stream(self) -> AsyncIterator[Delta]:
        deltas = self._stream()
        deltas = stream_with_sources(deltas, self.sources_footer) if self.append_sources else deltas
        return json_stream(deltas, lambda: self.citations) if self.json_object else deltas

    def sources_footer(self) -> str:
        return footer(self.citations, self.append_sources) if self.append_sources else ""

    async def _complete(self) -> Completion:
        if self.text is not None:
            return Completion(self.text, self.finish_reason, *self.usage)
        assert self.engine is not None
        try:
            return await self.engine.generate(self.messages, self.params)
        except (UpstreamError, EngineUnavailable) as exc:
            if not self._fall_back(exc):
                raise
            assert self.text is not None
            return Completion(self.text, self.finish_reason, *self.usage)

    def _stream(self) -> AsyncIterator[Delta]:
        if self.text is not None:
            return self._stream_text()
        assert self.engine is not None
        if self.fallback is not None:
            return self._stream_or_fall_back()
        return self.engine.stream(self.messages, self.params)  # the engine's own generator: no extra hop per token

    def _fall_back(self, exc: Exception) -> bool:
        """Become the fallback answer (and say why in the note); False when there is none."""
        if self.fallback is None:
            return False
        alt = self.fallback()
        if alt.text is None:
            return False
        log.warning("model server failed for a %s answer (%s): answering with the fallback", self.decision.route, exc)
        self.text, self.citations, self.engine, self.fallback = alt.text, alt.citations, None, None
        self.finish_reason, self.usage = alt.finish_reason, alt.usage
        self.note = f"the model server failed ({exc.__class__.__name__}): {alt.note or 'fallback answer'}"
        return True

    async def _stream_or_fall_back(self) -> AsyncIterator[Delta]:
        assert self.engine is not None
        stream = self.engine.stream(self.messages, self.params)
        async with aclosing(stream):  # type: ignore[type-var]
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
            except (UpstreamError, EngineUnavailable) as exc:
                if not self._fall_back(exc):
                    raise
                assert self.text is not None
                async for delta in self._stream_text():
                    yield delta
                return
            yield first
            async for delta in stream:
                yield delta

    async def _stream_text(self) -> AsyncIterator[Delta]:
        text = self.text or ""
        for i in range(0, len(text), STREAM_PIECE):
            yield Delta(text[i : i + STREAM_PIECE])
        yield Delta("", self.finish_reason, *self.usage)


def load_router(settings: ServiceSettings, kb: KnowledgeBase) -> Router:
    model = RouterModel.load(Path(settings.router_model or DEFAULT_MODEL))
    return Router(model, router_signals(settings, kb), kb.embed_queries)


def router_signals(settings: ServiceSettings, kb: KnowledgeBase) -> Signals:
    """What the router reads from the knowledge base (names, keyword match) and the personas' names."""
    names = [a for p in settings.personas for a in [p.display_name, *p.aliases]]
    return Signals(entities=kb.entities, persona_names=names,
                   keyword_top=lambda q: kb.retriever.keyword_top(q) if kb.available() else (0.0, 0))


class ChatService:
    def __init__(
        self, settings: ServiceSettings, kb: KnowledgeBase, engines: Engines, router: Router | None = None
    ) -> None:
        self.settings = settings
        self.kb = kb
        self.engines = engines
        self._router = router
        self._count: Callable[[str], int] | None = None
        self.served = ServedModels(settings, engines, [c.id for c in self._builtin_models({})])
        self.vector_stores: Any = None  # VectorStoreService (app.py): the knowledge bases of kongming.vector_store_ids

    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = load_router(self.settings, self.kb)
        return self._router

    def models(self) -> list[ModelCard]:
        """Every model a request may name: the routes, the personas, then the fine-tuned models (read now)."""
        tuned, bound = self.served.cards()
        return self._builtin_models(bound) + tuned

    def _builtin_models(self, bound: dict[str, str]) -> list[ModelCard]:  # bound: persona -> model deployed as it
        return [ModelCard(id=ROUTED, description="routed per message: rag, persona or both"),
                ModelCard(id=RAG_MODEL, description="answers from the knowledge base with citations"),
                *(ModelCard(id=PERSONA_PREFIX + p.name, description=f"speaks as {p.display_name}" + (
                    f", answered by fine-tuned model {bound[p.name]}" if p.name in bound else ""))
                  for p in self.settings.personas)]

    def resolve_model(self, model: str) -> tuple[Route | None, PersonaConfig | None]:
        """The forced route and persona a model name stands for (None route = let the router decide)."""
        if model == ROUTED:
            return None, None
        if model == RAG_MODEL:
            return "rag", None
        if model.startswith(PERSONA_PREFIX) and model != PERSONA_PREFIX:  # (no name: not the default persona)
            persona = self.settings.persona(model.removeprefix(PERSONA_PREFIX))
            if persona is not None:
                return "persona", persona
        known = ", ".join(c.id for c in self.models())
        raise NotFound(f"The model `{model}` does not exist. Available models: {known}", param="model")

    async def reply(
        self,
        messages: Sequence[Message],
        model: str = ROUTED,
        params: SamplingParams | None = None,
        options: KongmingOptions | None = None,
        max_tokens: int | None = None,
    ) -> Reply:
        """Prepare the answer to the conversation's last user message (a conversation the request model checked:
        protocol.ChatCompletionRequest). `max_tokens` None = the route's default; the result is capped by
        `max_tokens_cap`. Tools and a JSON response_format go to a model that can honour them, else
        structured.json_object_wanted says what happens."""
        params = params or SamplingParams()
        if options is not None and options.vector_store_ids:  # this turn retrieves from those stores instead
            rest = options.model_copy(update={"vector_store_ids": None})
            turn = await asyncio.to_thread(self._with_stores, options)  # opening a store reads it: off the loop
            return await turn.reply(messages, model, params, rest, max_tokens)
        reply = await self._prepare(messages, model, params, options or KongmingOptions(), max_tokens)
        reply.json_object = json_object_wanted(reply.engine, params)
        return reply

    def _with_stores(self, options: KongmingOptions) -> ChatService:
        """This service answering from the vector stores the request names (NotFound for an unknown one)."""
        if self.vector_stores is None:
            raise BadRequest("vector stores are not available here", param="kongming.vector_store_ids")
        turn = copy.copy(self)
        turn.kb = self.vector_stores.knowledge_base(options.vector_store_ids)
        router = copy.copy(self.router)  # the same fitted model, reading the stores' names and words
        router.signals = router_signals(self.settings, turn.kb)
        router.example_matrix = self.router.example_matrix  # type: ignore[method-assign]  # embedded once, shared
        turn._router = router
        return turn

    async def _prepare(
        self, messages: Sequence[Message], model: str, params: SamplingParams, options: KongmingOptions,
        max_tokens: int | None,
    ) -> Reply:
        cap = self.settings.max_tokens_cap
        tuned = self.served.get(model)  # one indexed SQLite read, and only for a name that is not built in
        if tuned is not None:  # a fine-tuned model answers the conversation as is: no retrieval, no persona prompt
            engine = await self.engines.fine_tuned(tuned)
            params.max_tokens = min(max_tokens or default_max_tokens(tuned), cap)
            decision = RouteDecision("persona", {"persona": 1.0}, f"fine-tuned model {tuned.id}", forced=True,
                                     persona=tuned.persona)
            return Reply(decision, [], model, engine=engine, messages=fine_tuned_messages(tuned, list(messages)),
                         params=params)
        forced, persona = self._route_and_persona(model, options)
        # the request model checked that a user turn is there (protocol.py); what follows the last one is an agent's
        # tool loop (the assistant's tool calls, their results), which a model that takes tools reads after the prompt
        everything = [dict(m) for m in messages]
        last_user = max(i for i, m in enumerate(everything) if m["role"] == "user")
        msgs, tail = everything[: last_user + 1], everything[last_user + 1 :]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        timings: dict[str, float] = {}
        # a forced persona turn never touches the knowledge base (no hop to its worker thread)
        kb_ready = forced != "persona" and await self.kb.run(self.kb.available)
        lexicon = lexicon_of(self.kb.retriever) if kb_ready else None
        replies = [m["content"] if isinstance(m["content"], str) else "" for m in msgs if m["role"] == "assistant"]
        query = retrieval_query(users, lexicon, persona.display_name, persona.aliases, replies or "")
        embedding = None
        t0 = time.perf_counter()
        if kb_ready and (forced is None or forced in ("rag", "both")):
            embedding = await self.kb.run(self.kb.retriever.embed_query, query)
            timings["embed_ms"] = (time.perf_counter() - t0) * 1000
        if forced is None:
            t1 = time.perf_counter()
            # the router reads each message's question part too (bounded work for a pasted text)
            bounded = [{**m, "content": question_part(m["content"])} for m in text_turns(msgs)]
            same = query == bounded[-1]["content"]
            decision = await self.kb.run(self.router.decide, bounded, embedding if same else None)
            timings["route_ms"] = (time.perf_counter() - t1) * 1000
        else:
            decision = RouteDecision(forced, {forced: 1.0}, f"{forced}: forced by the request", forced=True)
        if decision.route in ("persona", "both"):
            decision.persona = persona.name
        if decision.route == "persona":
            return await self._persona_reply(decision, persona, model, msgs, tail, params, max_tokens, timings)
        after = next_after(users, last_reply(msgs))  # 那后来呢？: the story goes on from the last answer's chapter
        hits, terms = await self._retrieve(query, options, embedding, timings, after) if kb_ready else ([], [])
        history = msgs[:-1]
        # the extractive answer's decline evidence (terms, names, dense floor), for every passage route
        evidence = relevant(hits, terms, question=query, lexicon=lexicon)
        if decision.route == "both" and kb_ready and not evidence:  # a fact the book does not give: said, not invented
            ready = Reply(decision, [], model, text=decline_message(query), timings=timings)
            return await self.kb.run(self._finish_text, ready, [query], params.stop, max_tokens)
        if decision.route == "both" and not (evidence and persona.grounded == "extractive"):
            grounded = hits if evidence else []  # grounded "generate": the persona's own model reads the passages
            return await self._persona_reply(decision, persona, model, msgs, tail, params, max_tokens, timings,
                                             grounded)
        rag_engine = self.engines.rag()
        if not kb_ready or (rag_engine is not None and not evidence):
            ready = Reply(decision, [], model, text=no_answer(query, None if kb_ready else self.kb.missing),
                          note=None if kb_ready else self.kb.error, timings=timings)
            return await self.kb.run(self._finish_text, ready, [query], params.stop, max_tokens)

        def extractive(note: str) -> Reply:
            extract = extractive_answer(query, hits, terms, lexicon, said="\n".join(replies if after else replies[-1:]))
            ready = Reply(decision, citations(hits, used=extract.used, quoted=extract.text), model,
                          text=extract.text, note=note, timings=timings)
            read = [query, *(hits[n - 1].text for n in extract.used)]  # what the answer was built from
            return self._finish_text(ready, read, params.stop, max_tokens)

        def answer(note: str) -> Reply:  # a `both` turn: the same facts after the persona's opening line
            ready = extractive(note)
            return self._framed(ready, persona, params.stop, max_tokens, query) if decision.route == "both" else ready

        if rag_engine is not None:
            params.max_tokens = min(max_tokens or 512, cap)
            prompt = rag_messages(history, users[-1], hits) if decision.route == "rag" else grounded_persona_messages(
                persona_messages(persona, msgs)[0]["content"], history, users[-1], hits)  # a capable model: in persona
            return Reply(decision, citations(hits), model, engine=rag_engine, messages=prompt + tail, params=params,
                         timings=timings, fallback=lambda: answer("extractive answer instead"))
        return await self.kb.run(answer, "extractive answer (no generative model configured)")

    async def _persona_reply(
        self, decision: RouteDecision, persona: PersonaConfig, model: str, msgs: list[Message], tail: list[Message],
        params: SamplingParams, max_tokens: int | None, timings: dict[str, float],
        hits: list[RetrievedChunk] | None = None,
    ) -> Reply:
        """The persona's own model answers (its decoding: persona_params), grounded on `hits` when there are any."""
        engine, bound = await self.engines.persona_engine(persona)
        decision.reason += f"; answered by fine-tuned model {bound.id}" if bound else ""  # one deployed to chat
        params.max_tokens = min(max_tokens or persona.max_tokens, self.settings.max_tokens_cap)
        persona_params(persona, params)
        prompt = persona_messages(persona, msgs)
        if hits:
            prompt = grounded_persona_messages(prompt[0]["content"], msgs[:-1], msgs[-1]["content"], hits)
            return Reply(decision, citations(hits), model, engine=engine, messages=prompt + tail, params=params,
                         timings=timings)
        unsourced = "the knowledge base is empty: answered in persona without sources"
        return Reply(decision, [], model, engine=engine, messages=prompt + tail, params=params,
                     note=unsourced if decision.route == "both" else None, timings=timings)

    def _framed(
        self, reply: Reply, persona: PersonaConfig, stop: Sequence[str], max_tokens: int | None, question: str
    ) -> Reply:
        """A grounded `both` answer: the persona's opening (not before an English question), then the extractive
        answer and its citations, cut again to the request's stop and max_tokens (a decline is left as it is)."""
        if language_of(question) == "en" or not (persona.opening and reply.text and reply.citations and self._count):
            return reply
        reply.text, finish = cut_answer(persona.opening + reply.text, stop, max_tokens, self._count)
        reply.citations = shown(reply.text, reply.citations)
        reply.finish_reason = "length" if "length" in (finish, reply.finish_reason) else finish
        reply.usage = (reply.usage[0], self._count(reply.text))
        return reply

    def _finish_text(self, reply: Reply, read: Sequence[str], stop: Sequence[str], max_tokens: int | None) -> Reply:
        """A ready answer cut as a model's would be (stop strings, max_tokens) and its usage counted with the
        knowledge base's embedder's tokenizer: prompt = what it was built from (the question as searched, the
        passages it quotes), completion = the answer."""
        if self._count is None:
            embedder = get_embedder(self.kb.settings.embed_model)
            if not isinstance(embedder, Tokenizer):
                raise TypeError(f"embedder {embedder.name} cannot count tokens (no token_count)")
            self._count = token_counter(embedder)
        assert reply.text is not None
        reply.text, reply.finish_reason = cut_answer(reply.text, stop, max_tokens, self._count)
        reply.citations = shown(reply.text, reply.citations)
        reply.usage = (sum(self._count(t) for t in read), self._count(reply.text))
        return reply


    def _route_and_persona(self, model: str, options: KongmingOptions) -> tuple[Route | None, PersonaConfig]:
        """The route the request forces (None: the router decides) and the persona that speaks."""
        forced, persona = self.resolve_model(model)
        if options.persona:
            persona = self.settings.persona(options.persona)
            if persona is None:
                raise BadRequest(f"unknown persona {options.persona!r}", param="kongming.persona")
        persona = persona or self.settings.persona()
        if persona is None:
            raise BadRequest(f"default persona {self.settings.default_persona!r} is not configured")
        return options.route or forced, persona

    async def _retrieve(
        self, query: str, options: KongmingOptions, embedding: Any, timings: dict[str, float], after: str = ""
    ) -> tuple[list[RetrievedChunk], list[tuple[list[str], float]]]:
        """The passages for the query (within the request's chapters and documents) and its weighted terms."""
        started = time.perf_counter()
        chapters = options.chapters or (None, None)
        filters = Filters(doc_ids=options.doc_ids, chapter_min=chapters[0], chapter_max=chapters[1])
        hits = await self.kb.run(self.kb.search, query, options.k or self.settings.retrieval_k, filters, embedding,
                                 after)
        terms = await self.kb.run(self.kb.retriever.query_terms, query)
        timings["retrieval_ms"] = (time.perf_counter() - started) * 1000
        return hits, terms



