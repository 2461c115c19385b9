"""Hand-written synonyms and short descriptions for the concepts bench/make_typed_prompts.py drew for them.

Written as a person would type them, for the concepts the seed dealt to these categories, before any was run
through the language filter, and not changed after it was measured. None contains the concept's own name or is
another concept's name; an entry is a string, or (string, [other concepts that answer it equally well]).
"""

SYNONYMS = {
    # Activities
    "tanabata tree": "bamboo wishing tree",
    "artist palette": "paint palette",
    "sparkler": "firework stick",
    # Animals & Nature
    "fallen leaf": "autumn leaves",
    "bug": "caterpillar",
    "cherry blossom": "sakura",
    "T-Rex": "tyrannosaurus",
    # Flags
    "flag Mexico": "Mexican flag",
    "flag Iran": "Iranian flag",
    "flag American Samoa": "American Samoan flag",
    "flag Thailand": "Thai flag",
    "flag Togo": "Togolese flag",
    # Food & Drink
    "fork and knife": "cutlery",
    "birthday cake": "bday cake",
    "salt": "seasoning shaker",
    "coconut": "palm nut",
    # Newer emoji
    "orca": "killer whale",
    "landslide": "mudslide",
    # Objects
    "bookmark": "page marker",
    "ballet shoes": "pointe shoes",
    "orange book": "orange textbook",
    "maracas": "rumba shakers",
    "video camera": "camcorder",
    "chair": "stool",
    # People & Body
    "family woman boy": "mom and son",
    "woman fairy": "fairy girl",
    "boy": "lad",
    "man elf": "male elf",
    "student": ("graduate", ["man student", "woman student"]),
    "detective": "private investigator",
    "vampire": "dracula",
    # Smileys & Emotion
    "clown face": "circus clown",
    "unamused face": "meh face",
    "money-mouth face": "dollar face",
    "face with medical mask": "face mask",
    # Symbols
    "TOP arrow": "back to top sign",
    "cross mark button": ("X checkbox", ["cross mark"]),
    "keycap 1": "number one key",
    "customs": "border control",
    "peace symbol": "peace sign",
    # Travel & Places
    "glowing star": "shining star",
    "pickup truck": "pickup",
    "mosque": "masjid",
    "construction": "road works sign",
    "national park": "nature reserve",
}

DESCRIPTIONS = {
    # Activities
    "slot machine": "casino machine with three reels and a lever",
    "flower playing cards": "japanese card with a flower picture",
    "lacrosse": "stick with a net for catching a ball",
    # Animals & Nature
    "dragon face": "head of a green chinese dragon",
    "cricket": "chirping insect with long antennae",
    "mushroom": "red toadstool with white spots",
    "wolf": "wild grey animal that howls at the moon",
    # Flags (Svalbard flies Norway's flag: the same picture)
    "flag Svalbard & Jan Mayen": ("flag of Svalbard", ["flag Norway"]),
    "flag Fiji": "light blue flag of Fiji with a shield",
    "flag Suriname": "Suriname's flag with a yellow star",
    "flag Luxembourg": "red white and light blue flag of Luxembourg",
    "flag Iceland": "Icelandic flag",
    # Food & Drink
    "bell pepper": "a green sweet pepper",
    "leafy green": "a head of green lettuce",
    "moon cake": "chinese pastry for the mid-autumn festival",
    "broccoli": "green vegetable that looks like a tiny tree",
    # Newer emoji
    "curly hair": "hair in tight curls",
    "flag Sark": "flag of Sark",
    # Objects
    "socks": "things you wear on your feet under shoes",
    "mobile phone": "a touchscreen phone",
    "electric plug": "the plug on the end of a power cord",
    "pushpin": "red pin for sticking notes on a board",
    "moai": "stone head statue from Easter Island",
    "glasses": "spectacles you wear on your nose",
    # People & Body
    "old man": "grandpa with grey hair",
    "person climbing": "someone scaling a rock wall",
    "woman mechanic": "female car mechanic with a wrench",
    "old woman": "grandmother with grey hair",
    "tooth": "a white molar",
    "person taking bath": "someone relaxing in a bathtub",
    "person with white cane": "blind person walking with a stick",
    # Smileys & Emotion
    "pleading face": "face with big puppy-dog eyes",
    "downcast face with sweat": "sad face with a drop of sweat",
    "light blue heart": "sky-blue heart",
    "grinning squinting face": "laughing face with eyes shut tight",
    # Symbols
    "white square button": "black square with a white frame",
    "no smoking": "crossed-out cigarette sign",
    "Gemini": "zodiac sign of the twins",
    "heavy equals sign": "thick equal sign",
    "minus": "subtraction sign",
    # Travel & Places
    "cloud": "fluffy white thing floating in the sky",
    "taxi": ("a yellow cab you hail in the street", ["oncoming taxi"]),
    "rocket": "a spaceship blasting off",
    "motorcycle": ("two-wheeled motor vehicle", ["motor scooter"]),
    "small airplane": "little propeller plane",
}
