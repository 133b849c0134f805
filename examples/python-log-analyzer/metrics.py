# The tutorial's UserMetricsCalculator (Part 1, "Real-time Log Analysis System"),
# unchanged but for the imports and the last line.
from weir import KeyedProcessFunction, MapStateDescriptor, Types, ValueStateDescriptor, export


class UserMetricsCalculator(KeyedProcessFunction):
    def __init__(self):
        self.action_counts = None
        self.session_duration = None
        self.last_action_time = None

    def open(self, runtime_context):
        self.action_counts = runtime_context.get_map_state(
            MapStateDescriptor("action_counts", Types.STRING(), Types.INT())
        )
        self.session_duration = runtime_context.get_state(
            ValueStateDescriptor("session_duration", Types.LONG())
        )
        self.last_action_time = runtime_context.get_state(
            ValueStateDescriptor("last_action_time", Types.LONG())
        )

    def process_element(self, log_event, ctx):
        current_time = log_event.timestamp

        # Update action counts
        current_count = self.action_counts.get(log_event.action) or 0
        self.action_counts.put(log_event.action, current_count + 1)

        # Calculate session duration
        last_time = self.last_action_time.value()
        if last_time:
            duration = current_time - last_time
            current_duration = self.session_duration.value() or 0
            self.session_duration.update(current_duration + duration)

        self.last_action_time.update(current_time)

        # Output metrics every minute
        if current_time % 60 == 0:
            metrics = {
                'user_id': log_event.user_id,
                'timestamp': current_time,
                'session_duration': self.session_duration.value() or 0,
                'action_counts': dict(self.action_counts.items())
            }
            ctx.collect(metrics)


Handler = export(UserMetricsCalculator)
