# The tutorials' RealTimeUserProfiler (Part 2, "Real-time Recommendation System") with
# its UserEvent and UserProfile dataclasses. Changes from the tutorial, all marked
# `weir:` below: the imports and the export line; UserProfile gets the to_json/from_json
# the tutorial placed on the wrong class; events arrive as JSON, so UserEvent is built
# from the element; and get_item_category uses a stable hash (Python's `hash()` of a
# string differs between processes, so the tutorial's categories would change on every
# restart, which state and checkpoints cannot allow).
import json
import zlib
from dataclasses import dataclass
from typing import Dict

from weir import KeyedProcessFunction, Types, ValueStateDescriptor, export  # weir: imports


@dataclass
class UserEvent:
    user_id: str
    item_id: str
    event_type: str  # view, click, purchase, like
    timestamp: int
    session_id: str
    metadata: Dict


@dataclass
class UserProfile:
    user_id: str
    interests: Dict[str, float]  # Interest by category
    behavior_patterns: Dict[str, int]  # Behavior patterns
    last_updated: int

    def update_interest(self, category: str, weight: float):
        """Update interest"""
        if category not in self.interests:
            self.interests[category] = 0.0

        # Update using exponential moving average
        alpha = 0.1
        self.interests[category] = (1 - alpha) * self.interests[category] + alpha * weight

    def get_top_interests(self, top_k: int = 5):
        """Return top interests"""
        return sorted(
            self.interests.items(),
            key=lambda x: x[1],
            reverse=True
        )[:top_k]

    # weir: the tutorial defines these two on RealTimeUserProfiler, where they cannot work
    def to_json(self):
        return json.dumps({
            'user_id': self.user_id,
            'interests': self.interests,
            'behavior_patterns': self.behavior_patterns,
            'last_updated': self.last_updated
        })

    @classmethod
    def from_json(cls, json_str):
        data = json.loads(json_str)
        return cls(**data)


class RealTimeUserProfiler(KeyedProcessFunction):
    def __init__(self):
        self.user_profile_state = None
        self.item_categories = {}  # Item-category mapping

    def open(self, runtime_context):
        self.user_profile_state = runtime_context.get_state(
            ValueStateDescriptor("user_profile", Types.STRING())
        )

    def process_element(self, user_event, ctx):
        """Update user profile in real-time"""
        user_event = UserEvent(**user_event)  # weir: elements arrive as JSON objects
        user_id = user_event.user_id

        # Load current profile
        profile_json = self.user_profile_state.value()
        if profile_json:
            profile = UserProfile.from_json(profile_json)
        else:
            profile = UserProfile(
                user_id=user_id,
                interests={},
                behavior_patterns={},
                last_updated=user_event.timestamp
            )

        # Process by event type
        self.update_profile_from_event(profile, user_event)

        # Save profile
        self.user_profile_state.update(profile.to_json())

        # Output updated profile
        ctx.collect(profile)

    def update_profile_from_event(self, profile: UserProfile, event: UserEvent):
        """Update profile based on event"""
        # Get item category (in practice, query from separate service)
        category = self.get_item_category(event.item_id)

        # Weight by event type
        event_weights = {
            'view': 0.1,
            'click': 0.3,
            'like': 0.5,
            'purchase': 1.0
        }

        weight = event_weights.get(event.event_type, 0.1)

        # Update interest
        profile.update_interest(category, weight)

        # Update behavior pattern
        pattern_key = f"{event.event_type}_{category}"
        profile.behavior_patterns[pattern_key] = \
            profile.behavior_patterns.get(pattern_key, 0) + 1

        profile.last_updated = event.timestamp

    def get_item_category(self, item_id: str) -> str:
        """Get item category"""
        # In practice, query from database or cache
        categories = ['electronics', 'books', 'clothing', 'home', 'sports']
        return categories[zlib.crc32(item_id.encode()) % len(categories)]  # weir: a stable hash


Handler = export(RealTimeUserProfiler)  # weir: the component's export
