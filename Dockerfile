# The host in a container: code in /app, the project folder /project (your agent module goes here),
# everything the host writes in /project/.co on a volume. README "Deployment" shows how to add your agent.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    CONNECTONION_ENV=production

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .

# A fixed non-root uid, so a bind-mounted .co/ can be chown'ed to it on the host (chown 10001 ./co-data).
# /project/.co exists and belongs to that user before VOLUME, so a new named volume inherits the owner.
RUN useradd --create-home --uid 10001 --user-group agent \
    && mkdir -p /project/.co \
    && chown -R agent:agent /project
USER agent
WORKDIR /project
VOLUME ["/project/.co"]
EXPOSE 8000

# slim has no curl; /health answers 200 while the host serves, even when the relay is down.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# The agent: CONNECTONION_AGENT=module:attr (a module in /project), else the built-in demo agent.
# Django's SECRET_KEY: DJANGO_SECRET_KEY, else generated once into /project/.co/secret_key (0600).
CMD ["python", "/app/manage.py", "runhost", "--host", "0.0.0.0", "--port", "8000"]
