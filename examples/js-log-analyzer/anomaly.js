// The tutorials' AnomalyDetector (Part 1, "Real-time Log Analysis System") in
// JavaScript with weir's SDK: the same logic as examples/python-log-analyzer/anomaly.py,
// and the same alerts.
import { KeyedProcessFunction, operator } from '@weir/guest';

class AnomalyDetector extends KeyedProcessFunction {
  open(runtimeContext) {
    this.failedLoginCount = runtimeContext.getState('failed_logins');
    this.lastLoginTime = runtimeContext.getState('last_login');
  }

  processElement(logEvent, ctx) {
    const currentTime = logEvent.timestamp;
    if (logEvent.action === 'login_failed') {
      // Alert at the 5th failure, then start counting again.
      const count = this.failedLoginCount.value() ?? 0;
      this.failedLoginCount.update(count + 1);
      if (count >= 4) {
        ctx.collect({
          type: 'security_alert',
          user_id: logEvent.user_id,
          message: `Multiple failed login attempts: ${count + 1}`,
          timestamp: currentTime,
        });
        this.failedLoginCount.clear();
      }
    } else if (logEvent.action === 'login_success') {
      this.failedLoginCount.clear();
      this.lastLoginTime.update(currentTime);
    } else if (['view', 'purchase', 'download'].includes(logEvent.action)) {
      const lastLogin = this.lastLoginTime.value();
      if (lastLogin && currentTime - lastLogin > 86400) {
        ctx.collect({
          type: 'anomaly_alert',
          user_id: logEvent.user_id,
          message: `Activity after long inactivity: ${logEvent.action}`,
          timestamp: currentTime,
        });
      }
    }
  }
}

export const handler = operator(AnomalyDetector);
