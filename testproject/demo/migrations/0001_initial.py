from django.db import migrations, models


def seed(apps, schema_editor):
    Note = apps.get_model("demo", "Note")
    Note.objects.bulk_create(Note(text=f"note {i}") for i in range(1, 11))


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("text", models.CharField(max_length=200)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["-created"]},
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
