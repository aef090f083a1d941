"""The evaluation set: long multi-session conversations generated from a seed, with questions whose evidence
turns are known.

Each conversation is a chat among two or three friends over a year and more: dated sessions a few weeks
apart, each a few dozen dialog turns of chit-chat with a few planted facts (one speaker's news: a pet
adopted, a move, a new job ...). Every fact template is filled for every speaker with different values, so
each fact has near-misses (another speaker's fact of the same kind) besides the chit-chat. Four kinds of
question, each with the turns that hold its answer:

single       a direct question about one fact, in the words of the fact ("What pet did Maya adopt?")
paraphrase   the same fact asked in other words (no content word of the fact's turn in the question)
two-fact     the answer needs two turns (a relative's move and, in another session, their new job)
date         "What did Maya do in May 2026?" or "... last May?": the fact turns of that speaker in the
             sessions of that month

Nothing is downloaded: the vocabulary below is the whole data set, and a seed makes it reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SINGLE = "single"
PARAPHRASE = "paraphrase"
TWO_FACT = "two-fact"
DATE = "date"
KINDS = (SINGLE, PARAPHRASE, TWO_FACT, DATE)


@dataclass(frozen=True, slots=True)
class Turn:
    """One dialog turn: who said what, when."""

    turn_id: str
    index: int
    speaker: str
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Question:
    """A question asked after the conversation, and the turns that answer it."""

    kind: str
    text: str
    evidence: frozenset[str]


@dataclass(slots=True)
class Conversation:
    """A conversation's turns (oldest first), its questions and when the questions are asked."""

    conversation_id: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    asked_at: datetime = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FactTemplate:
    """A kind of news: how it is said (``{x}`` the value), asked directly, and asked in other words."""

    key: str
    says: tuple[str, ...]
    asks: str
    paraphrase: str
    values: tuple[str, ...]


FACTS: tuple[FactTemplate, ...] = (
    FactTemplate(
        "instrument",
        (
            "I started taking {x} lessons last week, my fingers hurt so much!",
            "Guess what, I signed up for {x} lessons.",
        ),
        "What lessons did {n} sign up for?",
        "Which musical pursuit has {n} begun?",
        ("guitar", "piano", "violin", "cello", "drum", "saxophone", "ukulele", "flute", "trumpet", "harp"),
    ),
    FactTemplate(
        "pet",
        (
            "We adopted a {x} from the shelter on Saturday!",
            "Meet the newest member of the family: a {x} from the shelter.",
        ),
        "What pet did {n} adopt from the shelter?",
        "Which animal came to live with {n}?",
        ("beagle puppy", "tabby cat", "grey rabbit", "green parrot", "corgi", "hamster", "tortoise", "husky"),
    ),
    FactTemplate(
        "move",
        ("We're moving to {x} next month, the new apartment is tiny.", "Big news: we're moving to {x} in the spring."),
        "Where is {n} moving to?",
        "To which city will {n} relocate?",
        ("Lisbon", "Denver", "Osaka", "Toronto", "Glasgow", "Austin", "Melbourne", "Prague", "Seattle", "Montreal"),
    ),
    FactTemplate(
        "job",
        ("I accepted the offer, I'm going to work as a {x}!", "I got the job, starting as a {x} on Monday."),
        "What job offer did {n} accept?",
        "What is {n}'s new occupation?",
        ("pharmacist", "data analyst", "paramedic", "librarian", "architect", "sous chef", "physics teacher", "nurse"),
    ),
    FactTemplate(
        "race",
        ("I ran my first {x} on Sunday and didn't stop once.", "Finished the {x} this morning, legs are jelly."),
        "What race did {n} run?",
        "Which endurance event did {n} take part in?",
        ("half marathon", "marathon", "10k", "trail race", "charity 5k", "ultramarathon"),
    ),
    FactTemplate(
        "book",
        ("I just finished reading {x}, couldn't put it down.", "Finally read {x} cover to cover."),
        "What book did {n} finish reading?",
        "Which novel did {n} get through recently?",
        (
            "The Salt Road",
            "A Map of Winter",
            "The Glass Orchard",
            "Northern Lights Motel",
            "The Tin Clockmaker",
            "Red Harbor",
        ),
    ),
    FactTemplate(
        "allergy",
        ("Turns out I'm allergic to {x}, the doctor confirmed it.", "The allergy test came back: {x}."),
        "What is {n} allergic to?",
        "Which substance gives {n} a bad reaction, per the physician?",
        ("peanuts", "shellfish", "pollen", "penicillin", "latex", "dust mites"),
    ),
    FactTemplate(
        "car",
        ("I bought a used {x}, it makes a weird rattling noise.", "We finally bought a car, a second-hand {x}."),
        "What car did {n} buy?",
        "Which vehicle did {n} purchase?",
        ("Subaru Outback", "Honda Civic", "Toyota Prius", "VW Golf", "Mazda 3", "Ford Ranger", "Volvo wagon"),
    ),
    FactTemplate(
        "trip",
        ("We booked a trip to {x} for the holidays!", "Flights are booked, we're going to {x} over the holidays."),
        "Where is {n} travelling for the holidays?",
        "Which destination did {n} reserve a vacation in?",
        ("Iceland", "Morocco", "Vietnam", "Peru", "Norway", "Greece", "Japan", "Kenya"),
    ),
    FactTemplate(
        "pastime",
        ("I've been doing {x} every weekend, it's so relaxing.", "My new weekend thing is {x}, honestly so calming."),
        "What has {n} been doing every weekend?",
        "Which pastime helps {n} unwind on Saturdays and Sundays?",
        (
            "pottery",
            "rock climbing",
            "knitting",
            "woodworking",
            "birdwatching",
            "watercolor painting",
            "sourdough baking",
        ),
    ),
    FactTemplate(
        "language",
        ("I'm learning {x} on an app, 30 day streak so far.", "Started {x} classes, the grammar is brutal."),
        "Which language is {n} learning?",
        "What foreign tongue is {n} studying?",
        ("Spanish", "Japanese", "Portuguese", "Korean", "German", "Italian", "Mandarin", "Dutch"),
    ),
    FactTemplate(
        "injury",
        (
            "I sprained my {x} playing football, so no gym for a while.",
            "Hurt my {x} at football practice, it's swollen.",
        ),
        "What did {n} sprain playing football?",
        "Which body part did {n} injure during a soccer match?",
        ("ankle", "wrist", "knee", "shoulder", "thumb"),
    ),
    FactTemplate(
        "dish",
        ("My favorite dish lately is {x}, I make it twice a week.", "I'm obsessed with cooking {x} these days."),
        "What is {n}'s favorite dish lately?",
        "Which meal does {n} prepare most often nowadays?",
        ("shakshuka", "pad thai", "mushroom risotto", "chicken tikka", "ramen", "lasagna", "fish tacos"),
    ),
    FactTemplate(
        "volunteer",
        ("I volunteer at the {x} on Tuesdays now.", "Started volunteering at the {x}, it's rewarding."),
        "Where does {n} volunteer?",
        "Which organisation does {n} give free time to?",
        ("animal shelter", "food bank", "public library", "children's hospital", "community garden", "soup kitchen"),
    ),
    FactTemplate(
        "degree",
        ("I enrolled in a master's program in {x}!", "Got accepted into the {x} master's, classes start in the fall."),
        "What master's program did {n} enroll in?",
        "Which graduate field is {n} pursuing at university?",
        ("public health", "computer science", "economics", "marine biology", "urban planning", "linguistics"),
    ),
    FactTemplate(
        "garden",
        ("I planted {x} in the backyard, fingers crossed.", "Spent the afternoon planting {x} in the garden."),
        "What did {n} plant in the backyard?",
        "What is growing in {n}'s yard?",
        ("tomatoes", "sunflowers", "lavender", "strawberries", "an apple tree", "chili peppers"),
    ),
    FactTemplate(
        "concert",
        ("We saw {x} live at the arena, best concert ever.", "Got tickets to see {x} live, the show was amazing."),
        "Which band did {n} see in concert?",
        "Which musicians did {n} watch perform on stage?",
        ("The Paper Kites", "Midnight Tram", "Orange Static", "The Velvet Foxes", "Copper Bloom", "Lowland Choir"),
    ),
    FactTemplate(
        "child",
        ("Our daughter started {x} this fall, she loves it.", "The little one just began {x}, so cute."),
        "What did {n}'s daughter start this fall?",
        "Which activity has {n}'s kid taken up?",
        ("ballet", "kindergarten", "swimming lessons", "soccer practice", "violin lessons", "karate"),
    ),
)

RELATIVES = ("cousin", "neighbour", "old roommate", "coworker", "aunt", "best friend from school")
CITIES = ("Valencia", "Boise", "Leeds", "Halifax", "Dresden", "Hobart", "Tucson", "Bergen", "Cork", "Porto")
JOBS = ("midwife", "park ranger", "tax lawyer", "dentist", "florist", "air traffic controller", "chemist", "baker")
RELATIVE_NAMES = ("Dana", "Omar", "Ines", "Felix", "Rosa", "Tariq", "Greta", "Hugo", "Lena", "Mateo", "Sofia", "Kenji")
MOVED = (
    "My {rel} {c} just moved to {city}, she says it's lovely.",
    "Did I tell you my {rel} {c} packed up and moved to {city}?",
)
WORKS = ("{c} started working as a {job}, she loves it.", "Update on {c}: she's a {job} now, can you believe it?")
TWO_FACT_ASKS = "What does {n}'s {rel} who moved to {city} do for a living?"

SPEAKERS = ("Maya", "Jon", "Priya", "Tomas", "Aiko", "Ben", "Clara", "Diego", "Elif", "Farid", "Grace", "Hana", "Ivan")

CHIT_CHAT = (
    "Hey! How's your week going?",
    "Pretty good, just tired. Work has been hectic.",
    "Haha same here, I need a vacation.",
    "Did you catch the game last night?",
    "No, I fell asleep on the couch before halftime.",
    "The weather has been so grey lately.",
    "I know, I can't wait for some sunshine.",
    "What are you up to this weekend?",
    "Not much, probably cleaning the flat and catching up on sleep.",
    "That sounds nice honestly.",
    "I made coffee way too strong this morning.",
    "Lol, I've been there.",
    "Traffic was terrible today, took me an hour to get home.",
    "Ugh, that's the worst.",
    "Anyway, how's the family?",
    "Everyone's fine, thanks for asking!",
    "I've been meaning to call you for ages.",
    "We should grab lunch sometime soon.",
    "Definitely, let me know when you're free.",
    "I'm thinking of redecorating the living room.",
    "Ooh, what colors?",
    "Maybe something green, not sure yet.",
    "My phone battery dies so fast these days.",
    "You should get it replaced, it's cheap.",
    "Did you see that new cafe opened on the corner?",
    "Yes! Their croissants are great.",
    "I've always wanted to learn an instrument, someday maybe.",
    "I keep saying I'll start running again.",
    "Lisbon looks lovely in photos, I'd love to visit one day.",
    "My sister keeps sending me videos of dogs.",
    "Honestly I could read all day if I had the time.",
    "Cooking at home is saving me so much money.",
    "I should really plant something on my balcony.",
    "Have you ever been to a music festival?",
    "I'm so bad at remembering birthdays.",
    "It's been a long day, talk tomorrow?",
    "Sure, good night!",
    "Thanks for listening, I needed that.",
    "That's awesome, congrats!",
    "Wow, tell me more!",
    "No way, that's amazing.",
    "Oh no, I'm sorry to hear that.",
    "Keep me posted!",
    "Sounds like a plan.",
)

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def generate(seed: int, conversations: int, *, sessions: int = 16, turns_per_session: int = 24) -> list[Conversation]:
    """``conversations`` conversations from ``seed`` (the same seed, the same data)."""
    rng = random.Random(seed)
    return [_conversation(rng, f"conv-{c}", sessions, turns_per_session) for c in range(conversations)]


@dataclass(slots=True)
class _Planted:
    speaker: str
    text: str
    template: str
    value: str
    session: int


def _conversation(rng: random.Random, conversation_id: str, sessions: int, turns_per_session: int) -> Conversation:
    speakers = rng.sample(SPEAKERS, rng.choice((2, 3)))
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 120))
    dates: list[datetime] = []
    day = start
    for _ in range(sessions):
        dates.append(day.replace(hour=rng.randrange(8, 21), minute=rng.randrange(60)))
        day += timedelta(days=rng.randrange(18, 40))
    # Every speaker gets news of each kind (different values), in random sessions.
    plan: list[list[tuple[str, str, str, str]]] = [[] for _ in range(sessions)]
    for template in FACTS:
        values = rng.sample(template.values, len(speakers))
        for speaker, value in zip(speakers, values, strict=True):
            text = rng.choice(template.says).format(x=value)
            plan[rng.randrange(sessions)].append((speaker, text, template.key, value))
    # Two-fact stories: a speaker's relative moves (one session), and later has a new job (another).
    stories: list[tuple[str, str, str, str, int, int]] = []
    for speaker in speakers:
        for rel in rng.sample(RELATIVES, 2):
            name, city, job = rng.choice(RELATIVE_NAMES), rng.choice(CITIES), rng.choice(JOBS)
            first = rng.randrange(sessions - 1)
            second = rng.randrange(first + 1, sessions)
            plan[first].append((speaker, rng.choice(MOVED).format(rel=rel, c=name, city=city), f"moved:{rel}", city))
            plan[second].append((speaker, rng.choice(WORKS).format(c=name, job=job), f"works:{rel}", job))
            stories.append((speaker, rel, city, name, first, second))
    conversation = Conversation(conversation_id)
    planted: dict[tuple[str, str], list[str]] = {}
    """(speaker, template key) -> turn ids."""
    by_month: dict[tuple[str, int, int], list[str]] = {}
    """(speaker, year, month) -> turn ids of that speaker's news in that month."""
    index = 0
    for s, when in enumerate(dates):
        news = plan[s]
        n_turns = max(turns_per_session, len(news) * 3)
        slots = sorted(rng.sample(range(1, n_turns), len(news)))
        chat = iter(rng.sample(CHIT_CHAT, len(CHIT_CHAT)) * 3)
        queue = dict(zip(slots, news, strict=True))
        speaker_order = [speakers[i % len(speakers)] for i in range(n_turns)]
        for t in range(n_turns):
            index += 1
            turn_id = f"{conversation_id}-t{index:05d}"
            at = when + timedelta(minutes=2 * t)
            if t in queue:
                speaker, text, key, _value = queue[t]
                planted.setdefault((speaker, key), []).append(turn_id)
                by_month.setdefault((speaker, at.year, at.month), []).append(turn_id)
            else:
                speaker, text = speaker_order[t], next(chat)
            conversation.turns.append(Turn(turn_id, index, speaker, text, at))
    conversation.asked_at = dates[-1] + timedelta(days=rng.randrange(3, 20))
    _questions(rng, conversation=conversation, speakers=speakers, planted=planted, by_month=by_month, stories=stories)
    return conversation


def _questions(
    rng: random.Random,
    *,
    conversation: Conversation,
    speakers: list[str],
    planted: dict[tuple[str, str], list[str]],
    by_month: dict[tuple[str, int, int], list[str]],
    stories: list[tuple[str, str, str, str, int, int]],
) -> None:
    questions = conversation.questions
    for template in FACTS:
        for speaker in speakers:
            evidence = frozenset(planted[(speaker, template.key)])
            questions.append(Question(SINGLE, template.asks.format(n=speaker), evidence))
            questions.append(Question(PARAPHRASE, template.paraphrase.format(n=speaker), evidence))
    for speaker, rel, city, _name, _first, _second in stories:
        evidence = frozenset(planted[(speaker, f"moved:{rel}")] + planted[(speaker, f"works:{rel}")])
        questions.append(Question(TWO_FACT, TWO_FACT_ASKS.format(n=speaker, rel=rel, city=city), evidence))
    asked = conversation.asked_at
    months = sorted(by_month)
    for speaker, year, month in rng.sample(months, min(len(months), 12)):
        evidence = frozenset(by_month[(speaker, year, month)])
        name = MONTHS[month - 1]
        # "last May": the latest May before the question, and only if that is the month meant.
        latest_year = asked.year if month < asked.month else asked.year - 1
        if year == latest_year and rng.random() < 0.5:
            text = f"What did {speaker} tell us about last {name}?"
        else:
            text = f"What did {speaker} tell us about in {name} {year}?"
        questions.append(Question(DATE, text, evidence))
