# The tutorial's AnomalyDetector (Part 1, "Real-time Log Analysis System"), unchanged
# but for the imports and the last line. PyFlink's `log_event.timestamp` is read from the
# JSON element ({"user_id", "action", "timestamp", ...}), whose fields read as attributes.
from weir import KeyedProcessFunction, ListStateDescriptor, Types, ValueStateDescriptor, export


class AnomalyDetector(KeyedProcessFunction):
    def __init__(self):
        self.failed_login_count = None
        self.last_login_time = None
        self.suspicious_actions = None

    def open(self, runtime_context):
        self.failed_login_count = runtime_context.get_state(
            ValueStateDescriptor("failed_logins", Types.INT())
        )
        self.last_login_time = runtime_context.get_state(
            ValueStateDescriptor("last_login", Types.LONG())
        )
        self.suspicious_actions = runtime_context.get_list_state(
            ListStateDescriptor("suspicious", Types.STRING())
        )

    def process_element(self, log_event, ctx):
        current_time = log_event.timestamp

        # Track failed login attempts
        if log_event.action == "login_failed":
            current_count = self.failed_login_count.value() or 0
            self.failed_login_count.update(current_count + 1)

            # Alert if 5 or more failures within 5 minutes
            if current_count >= 4:  # Starting from 0, so 4 means 5th
                ctx.collect({
                    'type': 'security_alert',
                    'user_id': log_event.user_id,
                    'message': f'Multiple failed login attempts: {current_count + 1}',
                    'timestamp': current_time
                })
                self.failed_login_count.clear()

        # Clear failure count on successful login
        elif log_event.action == "login_success":
            self.failed_login_count.clear()
            self.last_login_time.update(current_time)

        # Detect abnormal time activity
        elif log_event.action in ["view", "purchase", "download"]:
            last_login = self.last_login_time.value()
            if last_login and (current_time - last_login) > 86400:  # 24 hours
                ctx.collect({
                    'type': 'anomaly_alert',
                    'user_id': log_event.user_id,
                    'message': f'Activity after long inactivity: {log_event.action}',
                    'timestamp': current_time
                })


Handler = export(AnomalyDetector)
