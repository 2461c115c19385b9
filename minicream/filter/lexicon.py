"""Small hand-made word lists the offline filter uses on top of the dataset's own names and aliases.

Kept short on purpose: the bilingual emoji names and aliases carry most of the vocabulary; these cover
everyday words the CLDR names lack ("puppy", "kitty"), the grammar of scene captions (relations,
counts, sizes) and filler words people wrap a subject in ("draw me a picture of ...").
"""
from __future__ import annotations

# everyday word -> concept name (used only when that concept is in the model's vocabulary)
SYNONYMS = {
    "puppy": "dog face", "doggy": "dog face", "doggie": "dog face", "pup": "dog face", "pooch": "dog face",
    "kitty": "cat face", "kitten": "cat face", "kitty cat": "cat face", "pussycat": "cat face",
    "bunny": "rabbit face", "piggy": "pig face", "froggy": "frog",
    "apple": "red apple", "orange": "tangerine", "mandarine": "tangerine", "clementine": "tangerine",
    "donut": "doughnut", "burger": "hamburger", "cheeseburger": "hamburger", "hotdog": "hot dog",
    "fries": "french fries", "chips": "french fries", "ice cream cone": "soft ice cream", "coffee": "hot beverage",
    "tea": "teacup without handle", "cake": "shortcake", "birthday cake": "birthday cake",
    "car": "automobile", "auto": "automobile", "plane": "airplane", "aeroplane": "airplane", "jet": "airplane",
    "bike": "bicycle", "spaceship": "rocket", "spacecraft": "rocket", "ufo": "flying saucer",
    "football": "soccer ball", "soccer": "soccer ball", "present": "wrapped gift", "gift box": "wrapped gift",
    "present box": "wrapped gift", "home": "house", "tree": "deciduous tree", "moon": "crescent moon",
    "heart": "red heart", "love heart": "red heart", "love": "red heart", "star": "star",
    "rain cloud": "cloud with rain", "rainy cloud": "cloud with rain",
    "xmas tree": "Christmas tree", "smiley": "grinning face", "smiley face": "grinning face",
    "telly": "television", "tv": "television", "mobile phone": "mobile phone", "cellphone": "mobile phone",
    "smartphone": "mobile phone", "laptop": "laptop", "pc": "desktop computer", "computer": "desktop computer",
    # Russian everyday words the CLDR names spell differently
    "яблоко": "red apple", "кот": "cat", "котик": "cat face", "котенок": "cat face", "щенок": "dog face",
    "пес": "dog", "машина": "automobile", "торт": "birthday cake", "сердце": "red heart", "сердечко": "red heart",
    "звезда": "star", "луна": "crescent moon", "мяч": "soccer ball", "шарик": "balloon", "зонтик": "umbrella",
    "елка": "Christmas tree", "смайлик": "grinning face",
}

# words wrapped around a subject that carry nothing drawable
STOPWORDS = frozenset("""
a an the one some any this that these those my your our of for with please pls plz me us i you
draw paint show make create render generate give picture image photo drawing illustration icon emoji
sticker pic of cute nice beautiful pretty simple single lonely little-known kind sort type
нарисуй нарисуйте покажи сделай создай картинка картинку изображение рисунок фото иконка эмодзи смайл
пожалуйста мне один одна одно какой какая какое
""".split())

# relation phrase (as a key, i.e. lower case, single spaces) -> scene caption wording
# Words that open a relative clause: it goes on to the end of the phrase, so a relation word after one is inside
# it ("things you wear on your feet under shoes", "an insect that bites and sucks blood"), not between two objects.
CLAUSE_WORDS = frozenset("that which who whose where you".split())
# Words that open a modifier of the words in front of them: a relative clause ("an animal that howls at the moon",
# "a ball you hit with a bat") or a prepositional phrase ("a sign for dangerous germs", "a pumpkin with a candle
# inside"). A description is about its head, never about a thing named only in its modifier (filter/meaning.py).
# Not "of": "a cup of coffee".
MODIFIER_WORDS = CLAUSE_WORDS | frozenset("with for from like at in on under inside around to".split())

RELATIONS = {
    "to the left of": "to the left of", "on the left of": "to the left of", "left of": "to the left of",
    "at the left of": "to the left of", "to the left side of": "to the left of",
    "to the right of": "to the right of", "on the right of": "to the right of", "right of": "to the right of",
    "at the right of": "to the right of", "to the right side of": "to the right of",
    "above": "above", "over": "above", "on top of": "above", "atop": "above",
    "below": "below", "under": "below", "underneath": "below", "beneath": "below",
    "next to": "and", "beside": "and", "besides": "and", "and": "and", "along with": "and", "plus": "and",
    "слева от": "to the left of", "справа от": "to the right of", "над": "above", "под": "below",
    "рядом с": "and", "и": "and",
}

NUMBERS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "pair of": 2, "a pair of": 2, "couple of": 2, "a couple of": 2,
    "два": 2, "две": 2, "три": 3, "четыре": 4, "пять": 5,
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}

SIZES = {
    "big": "big", "large": "big", "huge": "big", "giant": "big", "bigger": "big", "larger": "big",
    "small": "small", "little": "small", "tiny": "small", "smaller": "small", "mini": "small",
    "большой": "big", "большая": "big", "большое": "big", "огромный": "big",
    "маленький": "small", "маленькая": "small", "маленькое": "small", "крошечный": "small",
}

# phrases around a style name: "in openmoji style", "twemoji-style", "в стиле openmoji"
STYLE_FILLERS = frozenset({"in", "style", "styled", "в", "стиле", "стиль", "art", "look", "like"})
